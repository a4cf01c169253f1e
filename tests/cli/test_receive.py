"""Where 'xfer receive' puts an offered name (against a server: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xfer_cli.commands.receive import _destination
from xfer_cli.main import CommandError


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
