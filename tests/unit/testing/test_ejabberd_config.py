"""What LocalEjabberd writes into ejabberd.yml (xfer.testing.ejabberd_config):
Debian's shapers, federation with and without dialback, and YAML that
ejabberd reads numbers in."""

from __future__ import annotations

from typing import Any

from xfer.testing.ejabberd import STOCK_C2S_SHAPER, LocalEjabberd, Shaper
from xfer.testing.ejabberd_config import to_yaml


def config(**options: Any) -> dict[str, Any]:
    server = LocalEjabberd(domain="b.test", c2s_port=5222, proxy_port=7777, **options)
    return server.config()


def test_stock_shapers_and_no_federation_by_default() -> None:
    got = config()
    assert got["shaper"]["c2s_rate"] == {"rate": 3000, "burst_size": 20000}
    assert got["shaper_rules"]["c2s_shaper"] == "c2s_rate"
    assert got["s2s_access"] == "none"
    assert got["s2s_use_starttls"] == "false"
    assert "mod_s2s_dialback" not in got["modules"]
    modules = [entry["module"] for entry in got["listen"]]
    assert modules == ["ejabberd_c2s"]
    assert got["modules"]["mod_proxy65"]["port"] == 7777


def test_federation_keeps_dialback_unless_told_not_to() -> None:
    shipped = config(s2s=True, s2s_port=5269, s2s_tls=True)
    assert shipped["s2s_access"] == "all"
    assert shipped["s2s_use_starttls"] == "required"
    assert "mod_s2s_dialback" in shipped["modules"]
    assert {"port": 5269, "module": "ejabberd_s2s_in"}.items() <= next(
        e for e in shipped["listen"] if e["module"] == "ejabberd_s2s_in"
    ).items()
    certificates_only = config(
        s2s=True, s2s_port=5269, s2s_tls=True, s2s_dialback=False
    )
    assert "mod_s2s_dialback" not in certificates_only["modules"]
    assert certificates_only["s2s_use_starttls"] == "required"


def test_no_shaper_and_a_custom_one() -> None:
    got = config(c2s_shaper=None, s2s_shaper=Shaper(10**6))
    assert got["shaper_rules"]["c2s_shaper"] == "none"
    assert got["shaper"] == {"s2s_rate": 10**6}
    assert STOCK_C2S_SHAPER.config() == {"rate": 3000, "burst_size": 20000}


def test_yaml_leaves_numeric_keys_unquoted() -> None:
    text = to_yaml({"rules": {"5000": "admin", "name": "all"}})
    assert "\n    5000: " in text
    assert '\n    "name": ' in text
