"""Account settings: options, then environment, then the config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from xfer_cli.account import resolve
from xfer_cli.main import EXIT_USAGE, CommandError, cli


def test_settings_come_from_options_then_env_then_config(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = env / "config.toml"
    config.write_text(
        'jid = "conf@example.org"\npassword = "pw-conf"\nhost = "conf.host"\n'
        'port = 5223\ntls = "direct"\n'
    )
    config.chmod(0o600)
    got = resolve(jid=None, host=None, port=None, tls=None)
    assert (got.jid, got.password, got.host, got.port, got.tls) == (
        "conf@example.org",
        "pw-conf",
        "conf.host",
        5223,
        "direct",
    )
    monkeypatch.setenv("XFER_JID", "env@example.org")
    monkeypatch.setenv("XFER_PASSWORD", "pw-env")
    monkeypatch.setenv("XFER_PORT", "5300")
    got = resolve(jid=None, host=None, port=None, tls=None)
    assert (got.jid, got.password, got.port) == ("env@example.org", "pw-env", 5300)
    got = resolve(jid="opt@example.org", host="opt.host", port=1, tls="none")
    assert (got.jid, got.host, got.port, got.tls) == (
        "opt@example.org",
        "opt.host",
        1,
        "none",
    )


def test_missing_settings_are_usage_errors(env: Path) -> None:
    with pytest.raises(CommandError, match="no account") as caught:
        resolve(jid=None, host=None, port=None, tls=None)
    assert caught.value.exit_code == EXIT_USAGE
    # No password anywhere and no terminal to ask on.
    with pytest.raises(CommandError, match="XFER_PASSWORD"):
        resolve(jid="a@example.org", host=None, port=None, tls=None)
    asked = resolve(
        jid="a@example.org", host=None, port=None, tls=None, prompt=lambda jid: "typed"
    )
    assert asked.password == "typed"


def test_a_readable_config_with_a_password_is_flagged(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = env / "config.toml"
    config.write_text('jid = "a@example.org"\npassword = "pw"\n')
    config.chmod(0o644)
    resolve(jid=None, host=None, port=None, tls=None)
    assert "chmod 600" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "why"),
    [('jid = "a@example.org"\nport = "http"\n', "invalid port"), ("jid = [", "TOML")],
)
def test_bad_config_files(env: Path, text: str, why: str) -> None:
    (env / "config.toml").write_text(text)
    os.environ["XFER_PASSWORD"] = "pw"
    try:
        with pytest.raises(CommandError, match=why):
            resolve(jid=None, host=None, port=None, tls=None)
    finally:
        del os.environ["XFER_PASSWORD"]


def test_networked_command_without_account_says_what_to_do(env: Path) -> None:
    result = CliRunner().invoke(cli, ["receive", "--once"])
    assert result.exit_code == EXIT_USAGE
    assert "XFER_JID" in result.output


def test_the_port_follows_the_tls_mode_and_the_ca_file_is_checked(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer.testing.certs import CertificateAuthority

    monkeypatch.setenv("XFER_PASSWORD", "pw")
    got = resolve(jid="a@example.org", host=None, port=None, tls="direct")
    assert (got.port, got.ca_file) == (5223, None)
    got = resolve(jid="a@example.org", host=None, port=None, tls=None)
    assert (got.port, got.tls) == (5222, "starttls")
    got = resolve(jid="a@example.org", host=None, port=5300, tls="direct")
    assert got.port == 5300
    ca = CertificateAuthority().write(env / "ca.pem")
    monkeypatch.setenv("XFER_CA_FILE", str(ca))
    assert resolve(jid="a@example.org", host=None, port=None, tls=None).ca_file == ca
    (env / "not-a-ca.pem").write_text("hello\n")
    for bad, words in ((env / "not-a-ca.pem", "no PEM"), (env / "gone.pem", "read")):
        with pytest.raises(CommandError, match=words) as caught:
            resolve(jid="a@example.org", host=None, port=None, tls=None, ca_file=bad)
        assert caught.value.exit_code == EXIT_USAGE


def test_plain_to_a_remote_server_is_warned_about(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer_cli.account import warn_if_plain

    monkeypatch.setenv("XFER_PASSWORD", "pw")
    for host, warned in (("127.0.0.1", False), ("::1", False), ("xmpp.example", True)):
        warn_if_plain(resolve(jid="a@example.org", host=host, port=None, tls="none"))
        assert ("unencrypted" in capsys.readouterr().err) is warned
    warn_if_plain(resolve(jid="a@example.org", host=None, port=None, tls="starttls"))
    assert capsys.readouterr().err == ""
