"""Partial receipts that someone else could have planted.

A local user who can write into the receive directory must not get a file of
their choosing taken up as a kept prefix, nor make a state file be written
through a symlink or removed. Only a regular file of ours, with one link and
mode 0600, is taken up again (see also test_resume_prefix.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xfer.aio import partial

PEER = "alice@example.org"
FP = bytes(range(20))
CONTENT = os.urandom(300_000)
PREFIX = 120_000
OTHER_UID = 65534  # nobody


def _receipt(content: bytes) -> dict[str, Any]:
    """Whose receipt of what: the keys of a partial receipt."""
    return {
        "peer": PEER,
        "fingerprint": FP,
        "file_id": hashlib.sha256(content).digest(),  # a version 1 offer's id
        "size": len(content),
    }


def record(dest: Path, content: bytes = CONTENT) -> partial.Partial:
    return partial.new_partial(dest, **_receipt(content))


def private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def kept(dest: Path, prefix: bytes = CONTENT[:PREFIX]) -> partial.Partial:
    """A partial receipt as a broken transfer leaves it: ours, 0600."""
    p = record(dest)
    private_file(p.part, prefix)
    p.save(len(prefix))
    return p


def lookup(directory: Path, content: bytes = CONTENT) -> partial.Partial | None:
    return partial.find(directory, **_receipt(content))


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def as_root() -> bool:
    return os.geteuid() == 0


# -- adoption ------------------------------------------------------------------


def test_a_kept_receipt_of_ours_is_adopted(tmp_path: Path) -> None:
    p = kept(tmp_path / "f.bin")
    found = lookup(tmp_path)
    assert found is not None
    assert (found.part, found.state.verified) == (p.part, PREFIX)


@pytest.mark.parametrize("which", ["part", "state", "both"])
def test_files_others_may_read_are_not_adopted_and_are_left_alone(
    tmp_path: Path, which: str
) -> None:
    p = kept(tmp_path / "f.bin")
    for path in {"part": [p.part], "state": [p.state_path]}.get(
        which, [p.part, p.state_path]
    ):
        path.chmod(0o644)
    assert lookup(tmp_path) is None
    assert p.part.read_bytes() == CONTENT[:PREFIX]
    assert p.state_path.exists()


@pytest.mark.parametrize("which", ["part", "state"])
def test_a_file_with_a_second_link_is_not_adopted(tmp_path: Path, which: str) -> None:
    p = kept(tmp_path / "f.bin")
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    os.link(p.part if which == "part" else p.state_path, elsewhere / "link")
    assert lookup(tmp_path) is None


@pytest.mark.parametrize("which", ["part", "state"])
def test_a_symlink_is_neither_adopted_nor_followed(tmp_path: Path, which: str) -> None:
    p = kept(tmp_path / "f.bin")
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    path = p.part if which == "part" else p.state_path
    target = elsewhere / "real"
    path.rename(target)
    path.symlink_to(target)
    assert lookup(tmp_path) is None
    assert target.exists()


@pytest.mark.skipif(not as_root(), reason="needs root to give a file away")
def test_files_of_another_user_are_not_adopted_nor_removed(tmp_path: Path) -> None:
    p = kept(tmp_path / "f.bin")
    for path in (p.part, p.state_path):
        os.chown(path, OTHER_UID, OTHER_UID)
    assert lookup(tmp_path) is None
    p.remove()
    assert partial.sweep(tmp_path, -1) == 0  # looked at, but not removed
    assert p.part.exists()
    assert p.state_path.exists()


# -- the state file ------------------------------------------------------------


def test_save_does_not_write_through_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = record(tmp_path / "f.bin")
    private_file(p.part, b"x" * 40)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    tokens = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(partial.secrets, "token_hex", lambda n=None: next(tokens))
    state = p.state_path
    planted = [
        state.with_name(state.name + ".new"),  # the name save() used to take
        state.with_name(state.name + ".aaaa.new"),  # the first one it draws
    ]
    for link in planted:
        link.symlink_to(victim)
    p.save(40)
    assert victim.read_bytes() == b"precious"
    assert all(link.is_symlink() for link in planted)
    assert json.loads(state.read_text())["verified"] == 40
    assert not state.is_symlink()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        [p.part.name, state.name, victim.name, *(link.name for link in planted)]
    )


def test_save_creates_the_state_0600_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], None]
) -> None:
    p = record(tmp_path / "f.bin")
    umask(0o377)
    p.save(0)
    umask(0o022)
    assert stat.S_IMODE(p.state_path.stat().st_mode) == 0o600


def test_remove_deletes_only_the_files_it_made(tmp_path: Path) -> None:
    p = kept(tmp_path / "f.bin")
    bystander = p.state_path.with_suffix(".new")  # the name remove() used to take
    bystander.write_bytes(b"not ours to delete")
    p.remove()
    assert sorted(x.name for x in tmp_path.iterdir()) == [bystander.name]
