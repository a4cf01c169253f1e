"""'xfer keys', 'xfer trust', 'xfer untrust', with click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from xfer_cli.main import EXIT_USAGE, cli

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
