"""The networked commands' local parts, with click's runner: settings, keys,
trust, help, sizes, destinations. (Against a server: tests/integration.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from xfer_cli.account import resolve
from xfer_cli.commands.receive import _destination
from xfer_cli.main import COMMANDS, EXIT_USAGE, CommandError, cli
from xfer_cli.params import SizeType

FP = "A0252003 07B27F2D 0EF89428 AE02181D B972498F"


def test_keys_creates_a_private_key_and_shows_its_fingerprint(env: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["keys", "--json"])
    assert first.exit_code == 0, first.output
    shown = json.loads(first.output)
    assert len(shown["fingerprint"].replace(" ", "")) == 40
    again = json.loads(runner.invoke(cli, ["keys", "--json"]).output)
    assert again["fingerprint"] == shown["fingerprint"]  # the same key, kept
    key = env / "data" / "otr.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (env / "data").stat().st_mode & 0o777 == 0o700


def test_trust_and_untrust(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["trust", "bob@example.org", *FP.split()]).exit_code == 0
    listed = json.loads(runner.invoke(cli, ["keys", "--json"]).output)["trusted"]
    assert listed == [{"fingerprint": FP, "how": "manual", "jid": "bob@example.org"}]
    assert (env / "data" / "trust.json").stat().st_mode & 0o777 == 0o600
    human = runner.invoke(cli, ["keys"]).output
    assert "bob@example.org" in human
    assert runner.invoke(cli, ["untrust", "bob@example.org"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["keys", "--json"]).output)["trusted"] == []
    again = runner.invoke(cli, ["untrust", "bob@example.org"])
    assert again.exit_code == 1
    assert "no trusted fingerprint" in again.output


@pytest.mark.parametrize(
    "args", [["bob@example.org", "12345"], ["bob", FP], ["bob@example.org", "zz" * 20]]
)
def test_trust_refuses_bad_input(env: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["trust", *args])
    assert result.exit_code == EXIT_USAGE
    assert result.output.startswith("xfer: error: ")
    assert len(result.output.strip().splitlines()) == 1


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


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_main_help_lists_commands_and_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for word in ("send", "receive", "verify", "demo", "Exit codes", "7", "9"):
        assert word in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("500", 500),
        ("1K", 1024),
        ("2M", 2 << 20),
        ("1.5G", 3 << 29),
        ("2GiB", 2 << 30),
        ("3gb", 3 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert SizeType().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["lots", "-1M", ""])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(click.BadParameter):
        SizeType().convert(text, None, None)


def test_destinations_stay_inside_and_never_clobber(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert _destination(inbox, "../../x.txt", False) == inbox.resolve() / "x.txt"
    (inbox / "x.txt").write_text("mine")
    assert _destination(inbox, "x.txt", False) == inbox.resolve() / "x (2).txt"
    assert _destination(inbox, "x.txt", True) == inbox.resolve() / "x.txt"
    nested = _destination(inbox, "a/b/../c.txt", False)
    assert nested == inbox.resolve() / "a" / "b" / "c.txt"
    assert (inbox / "a" / "b").is_dir()
    (inbox / "link").symlink_to(tmp_path)
    with pytest.raises(CommandError, match="in the way"):
        _destination(inbox, "link/evil.txt", False)
