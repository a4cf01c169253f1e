"""The 'xfer' group: every command's help, the exit codes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from xfer_cli.main import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_main_help_lists_commands_and_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for word in ("send", "receive", "verify", "demo", "Exit codes", "7", "9"):
        assert word in result.output
