"""What a :class:`~xfer.testing.ejabberd.LocalEjabberd` writes into its
ejabberd.yml: Debian's settings where they matter for xfer (see that
module), the ports, addresses and TLS files of the instance, and the
traffic shapers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xfer.testing.ejabberd import LocalEjabberd

__all__ = ["STOCK_C2S_SHAPER", "STOCK_S2S_SHAPER", "Shaper", "server_config", "to_yaml"]


@dataclass(frozen=True, slots=True)
class Shaper:
    """An ejabberd traffic shaper: ``rate`` bytes per second after a burst
    of ``burst_size`` bytes (ejabberd's default burst if None)."""

    rate: int
    burst_size: int | None = None

    def config(self) -> object:
        if self.burst_size is None:
            return self.rate
        return {"rate": self.rate, "burst_size": self.burst_size}


#: The c2s shaper Debian ships for every account but the admin ("normal").
STOCK_C2S_SHAPER = Shaper(3000, 20000)
#: The s2s shaper Debian ships ("fast").
STOCK_S2S_SHAPER = Shaper(200000)


def to_yaml(config: dict[str, object]) -> str:
    """``config`` as YAML: JSON, but with keys that are numbers unquoted
    (ejabberd reads a quoted ``"100"`` in a rule as a name, not a number)."""
    return (
        re.sub(r'^(\s*)"(\d+)":', r"\1\2:", json.dumps(config, indent=2), flags=re.M)
        + "\n"
    )


def server_config(
    server: LocalEjabberd, certfiles: list[str], ca_file: str | None
) -> dict[str, object]:
    """The configuration of ``server``, its certificate (and key) files and
    the CA file it checks remote servers with being ``certfiles`` and
    ``ca_file``."""
    c2s: dict[str, object] = {
        "ip": server.address,
        "module": "ejabberd_c2s",
        "max_stanza_size": 262144,
        "shaper": "c2s_shaper",
        "access": "c2s",
    }
    if server.tls or server.require_tls:
        c2s["starttls"] = True
        c2s["starttls_required"] = server.require_tls
    listen: list[dict[str, object]] = [{"port": server.c2s_port, **c2s}]
    if server.direct_tls:
        listen.append({"port": server.direct_tls_port, **c2s, "tls": True})
    if server.s2s:
        listen.append(
            {
                "port": server.s2s_port,
                "ip": server.address,
                "module": "ejabberd_s2s_in",
                "max_stanza_size": 524288,
                "shaper": "s2s_shaper",
            }
        )
    shapers: dict[str, object] = {}
    rules: dict[str, object] = {
        "max_user_sessions": 10,
        "max_user_offline_messages": {"5000": "admin", "100": "all"},
    }
    for name, shaper in (("c2s", server.c2s_shaper), ("s2s", server.s2s_shaper)):
        if shaper is None:
            rules[f"{name}_shaper"] = "none"
        else:
            shapers[f"{name}_rate"] = shaper.config()
            rules[f"{name}_shaper"] = f"{name}_rate"
    modules: dict[str, object] = {
        "mod_adhoc": {},
        "mod_blocking": {},
        "mod_caps": {},
        "mod_carboncopy": {},
        "mod_client_state": {},
        "mod_disco": {},
        "mod_last": {},
        "mod_ping": {},
        "mod_privacy": {},
        "mod_private": {},
        "mod_version": {},
        "mod_roster": {"versioning": True},
        "mod_stream_mgmt": {
            "resend_on_timeout": "if_offline",
            "resume_timeout": server.resume_timeout,
        },
        "mod_vcard": {"search": False},
        "mod_proxy65": {
            "host": server.proxy_jid,
            "ip": server.address,
            "port": server.proxy_port,
            "hostname": server.address,
            "access": "all",
        },
    }
    if server.offline:
        modules["mod_offline"] = {
            "access_max_user_messages": "max_user_offline_messages"
        }
    if server.s2s and server.s2s_dialback:
        modules["mod_s2s_dialback"] = {}
    config: dict[str, object] = {
        "loglevel": "info",
        "log_rotate_count": 0,
        "hosts": [server.domain],
        "listen": listen,
        "disable_sasl_mechanisms": ["digest-md5", "X-OAUTH2"],
        "auth_method": "internal",
        "auth_password_format": "scram",
        "acl": {
            "admin": {"user": [""]},
            "local": {"user_regexp": ""},
            "loopback": {"ip": ["127.0.0.0/8", "::1/128"]},
        },
        "access_rules": {
            "local": {"allow": "local"},
            "c2s": {"deny": "blocked", "allow": "all"},
        },
        "shaper": shapers,
        "shaper_rules": rules,
        "modules": modules,
        "s2s_access": "all" if server.s2s else "none",
        "outgoing_s2s_port": server.outgoing_s2s_port,
        "s2s_use_starttls": "required" if server.s2s_tls else "false",
    }
    if certfiles:
        config["certfiles"] = certfiles
    if ca_file is not None:
        config["ca_file"] = ca_file
    return config
