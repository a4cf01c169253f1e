"""Resuming a kept prefix when someone could change it underneath.

The prefix is hashed through the very descriptor that appends the rest, and
read and hashed again through it before the rename; the file renamed must be
the one opened and hold exactly what was written. A prefix changed after it
was hashed, a part file swapped by name, or one planted after the lookup ends
in IntegrityError with nothing at the destination. The streams are real
sealed streams, opened by the real receive_sealed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.adapters.aio.sealed_streams import MemoryStream, offer_for, sealed_rest
from tests.adapters.aio.test_partial_adoption import (
    CONTENT,
    OTHER_UID,
    PREFIX,
    as_root,
    kept,
    lookup,
    private_file,
    record,
)
from xfer.aio import partial
from xfer.aio.files import AtomicWriter
from xfer.aio.pump import receive_sealed
from xfer.errors import IntegrityError

KEY = os.urandom(32)


async def test_a_part_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    p = record(dest)

    async def broken_write() -> None:
        async with AtomicWriter(dest, partial=p, keep=lambda _: True) as w:
            await w.write(CONTENT[:PREFIX])
            raise RuntimeError

    old = os.umask(0o277)
    try:
        with pytest.raises(RuntimeError):
            await broken_write()
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.part.stat().st_mode) == 0o600
    assert lookup(tmp_path) is not None  # so it can be taken up again


# -- resuming through one descriptor -------------------------------------------


async def receive(
    dest: Path, p: partial.Partial, on_read: Callable[[], None] | None = None
) -> None:
    offer = offer_for(CONTENT)
    start = p.state.verified
    sealed = sealed_rest(offer, KEY, CONTENT[start:])
    # on_read runs once the receiver has opened the part file and hashed
    # its prefix.
    await receive_sealed(
        MemoryStream(sealed, 65536, on_read),
        KEY,
        offer,
        dest,
        sealed_size=len(sealed),
        partial=p,
        keep=lambda e: not isinstance(e, IntegrityError),
    )


async def test_a_kept_prefix_is_continued(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    kept(dest)
    found = lookup(tmp_path)
    assert found is not None
    await receive(dest, found)
    assert dest.read_bytes() == CONTENT
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


async def test_a_prefix_changed_after_it_was_hashed_is_not_renamed_into_place(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    p = kept(dest)

    def tamper() -> None:  # through a descriptor of its own
        with p.part.open("r+b") as f:
            f.seek(1000)
            f.write(b"EVIL")

    with pytest.raises(IntegrityError):
        await receive(dest, p, tamper)
    assert not dest.exists()


async def test_a_part_file_swapped_by_name_is_not_renamed_into_place(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    p = kept(dest)
    forged = bytearray(CONTENT)
    forged[1000:1004] = b"EVIL"
    swap = tmp_path / "swap"

    def replace() -> None:  # the whole forged file, under the part file's name
        private_file(swap, bytes(forged))
        os.replace(swap, p.part)

    with pytest.raises(IntegrityError):
        await receive(dest, p, replace)
    assert not dest.exists()


@pytest.mark.parametrize("how", ["mode", "link", "symlink"])
async def test_a_part_file_planted_after_the_lookup_is_refused(
    tmp_path: Path, how: str
) -> None:
    dest = tmp_path / "f.bin"
    p = kept(dest)  # found earlier; now replaced before the receipt opens it
    if how == "mode":
        p.part.chmod(0o644)
    elif how == "link":
        os.link(p.part, tmp_path / "second-name")
    else:
        real = tmp_path / "real"
        p.part.rename(real)
        p.part.symlink_to(real)
    with pytest.raises(IntegrityError):
        await receive(dest, p)
    assert not dest.exists()


@pytest.mark.skipif(not as_root(), reason="needs root to give a file away")
async def test_a_part_file_of_another_user_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    p = kept(dest)
    os.chown(p.part, OTHER_UID, OTHER_UID)
    with pytest.raises(IntegrityError):
        await receive(dest, p)
    assert not dest.exists()
    assert p.part.read_bytes() == CONTENT[:PREFIX]
