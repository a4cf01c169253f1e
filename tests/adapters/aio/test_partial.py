"""Partial receipts on disk: state files, finding them, sweeping old ones,
and the atomic writer that keeps or continues them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from xfer.aio import partial
from xfer.aio.files import AtomicWriter
from xfer.errors import IntegrityError, TransferTimeout

PEER = "alice@example.org"
FP = bytes(range(20))
DIGEST = bytes(range(32))


def record(dest: Path, size: int = 100) -> partial.Partial:
    return partial.new_partial(
        dest, peer=PEER, fingerprint=FP, file_id=DIGEST, size=size
    )


def lookup(directory: Path, size: int = 100) -> partial.Partial | None:
    return partial.find(directory, peer=PEER, fingerprint=FP, file_id=DIGEST, size=size)


def private(path: Path, data: bytes) -> None:
    """Write ``path`` as xfer makes its files (mode 0600): only such a file
    is taken up again (see test_partial_adoption.py)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    path.chmod(0o600)


def test_a_saved_partial_is_found_by_sender_and_file_only(tmp_path: Path) -> None:
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 40)
    p.save(40)
    assert oct(p.state_path.stat().st_mode & 0o777) == "0o600"
    found = lookup(tmp_path)
    assert found is not None
    assert (found.part, found.state.verified, found.state.dest) == (p.part, 40, "a.bin")
    # Another size, sender or fingerprint is another file.
    assert lookup(tmp_path, size=101) is None
    assert (
        partial.find(tmp_path, peer="eve@x", fingerprint=FP, file_id=DIGEST, size=100)
        is None
    )
    assert (
        partial.find(
            tmp_path, peer=PEER, fingerprint=bytes(20), file_id=DIGEST, size=100
        )
        is None
    )


def test_a_state_that_promises_more_than_the_file_holds_is_ignored(
    tmp_path: Path,
) -> None:
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 10)
    p.save(40)
    assert lookup(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        json.dumps({"version": 99}).encode(),
        json.dumps({"version": 1, "peer": PEER}).encode(),
        json.dumps({"version": 2, "peer": PEER}).encode(),
        b"{" + b" " * 9000 + b"}",
    ],
)
def test_malformed_state_files_are_ignored(tmp_path: Path, content: bytes) -> None:
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 40)
    private(p.state_path, content)
    assert lookup(tmp_path) is None


def test_a_state_file_names_the_file_by_its_id(tmp_path: Path) -> None:
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 40)
    p.save(40)
    data = json.loads(p.state_path.read_text())
    assert (data["version"], data["file_id"]) == (2, DIGEST.hex())
    assert "sha256" not in data
    assert (
        partial.find(tmp_path, peer=PEER, fingerprint=FP, file_id=bytes(32), size=100)
        is None
    )


def test_a_version_1_state_file_is_still_found_by_its_sha256(tmp_path: Path) -> None:
    # Written before offers named files by an id: it holds the SHA-256 of a
    # version 1 offer, which is what such an offer is found by.
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 40)
    p.save(40)
    data = json.loads(p.state_path.read_text())
    data["version"] = 1
    data["sha256"] = data.pop("file_id")
    p.state_path.write_text(json.dumps(data))
    found = lookup(tmp_path)
    assert found is not None
    assert found.state.verified == 40


def test_a_state_naming_a_path_elsewhere_is_ignored(tmp_path: Path) -> None:
    p = record(tmp_path / "a.bin")
    private(p.part, b"x" * 40)
    p.save(40)
    data = json.loads(p.state_path.read_text())
    data["dest"] = "../escape"
    p.state_path.write_text(json.dumps(data))
    assert lookup(tmp_path) is None


def test_sweep_removes_old_partials_and_orphans_only(tmp_path: Path) -> None:
    old, fresh = record(tmp_path / "old.bin"), record(tmp_path / "new.bin")
    for p in (old, fresh):
        p.part.write_bytes(b"x")
        p.save(1)
    orphan = tmp_path / ".lost.bin.00000000.xfer-part"
    orphan.write_bytes(b"y")
    week = 7 * 24 * 3600
    os.utime(orphan, (time.time() - 2 * week,) * 2)
    state = json.loads(old.state_path.read_text())
    state["updated"] = time.time() - 2 * week
    old.state_path.write_text(json.dumps(state))
    assert partial.sweep(tmp_path, week) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.part.name, fresh.state_path.name]
    )


async def test_a_writer_keeps_its_prefix_when_told_and_continues_it(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    p = record(dest)

    async def broken_write() -> None:
        async with AtomicWriter(dest, partial=p, keep=lambda _: True) as w:
            await w.write(b"a" * 30)
            raise TransferTimeout("cut")

    with pytest.raises(TransferTimeout):
        await broken_write()
    assert p.part.read_bytes() == b"a" * 30
    assert lookup(tmp_path) is not None
    assert p.state.verified == 30
    # Anything beyond the recorded length (written but not known to be on
    # the disk when a process died) is cut off when the receipt continues.
    with p.part.open("ab") as f:
        f.write(b"junk")
    async with AtomicWriter(dest, partial=p) as w:
        assert w.written == 30
        await w.write(b"b" * 70)
        await w.commit()
    assert dest.read_bytes() == b"a" * 30 + b"b" * 70
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


async def test_a_writer_drops_its_prefix_when_the_data_was_not_authentic(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    p = record(dest)

    async def tampered_write() -> None:
        async with AtomicWriter(
            dest, partial=p, keep=lambda e: not isinstance(e, IntegrityError)
        ) as w:
            await w.write(b"a" * 30)
            raise IntegrityError

    with pytest.raises(IntegrityError):
        await tampered_write()
    assert list(tmp_path.iterdir()) == []


async def test_a_writer_that_wrote_nothing_keeps_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(TransferTimeout):
        async with AtomicWriter(dest, partial=record(dest), keep=lambda _: True):
            raise TransferTimeout("cut")
    assert list(tmp_path.iterdir()) == []
