"""``xfer send``'s line about the path the data took."""

from __future__ import annotations

import pytest
from xfer_cli.commands.send import path_taken


@pytest.mark.parametrize(
    ("transport", "via", "line"),
    [
        ("socks5-direct", "192.168.1.20:40607", "direct to 192.168.1.20:40607"),
        ("socks5-direct", "[fd00::2]:40607", "direct to [fd00::2]:40607"),
        ("socks5-assisted", "203.0.113.7:6000", "assisted to 203.0.113.7:6000"),
        ("socks5-proxy", "proxy.example.org", "through the proxy proxy.example.org"),
        ("ibb", "", "in-band (IBB, through the servers)"),
    ],
)
def test_the_path_is_named(transport: str, via: str, line: str) -> None:
    assert path_taken(transport, via) == line


def test_a_proxy_jid_from_the_peer_is_escaped() -> None:
    # The proxy's JID is the peer's word (its candidate): no terminal codes.
    assert "\x1b" not in path_taken("socks5-proxy", "evil\x1b[2Jproxy")


def test_standard_input_goes_to_one_recipient(env: object) -> None:
    from click.testing import CliRunner
    from xfer_cli.main import EXIT_USAGE, cli

    result = CliRunner().invoke(
        cli, ["send", "-", "--to", "bob@example.org", "--to", "carol@example.org"]
    )
    assert result.exit_code == EXIT_USAGE
    assert "one recipient" in result.output


def test_the_partial_exit_code_is_documented() -> None:
    from xfer_cli.main import EXIT_CODES_HELP, EXIT_PARTIAL

    assert EXIT_PARTIAL == 16
    assert f"  {EXIT_PARTIAL}   several recipients: some got every file" in (
        EXIT_CODES_HELP
    )
