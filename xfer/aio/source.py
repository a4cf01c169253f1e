"""The sender's file, before and beside the one pass that seals it.

An offer names the file by an id (:func:`xfer.transfer.offer.file_id`) that
costs a ``stat`` and two reads of 64 KiB, never a read of the whole file:
:func:`identify`. The SHA-256 of the whole plaintext is computed while the
file is read for sealing (:func:`xfer.aio.pump.send_sealed`); only a resumed
transfer, which seals the rest from byte N, reads the prefix [0, N) once
more for it: :func:`sha256_prefix`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.aio.files import read_chunks
from xfer.transfer.offer import FILE_ID_SAMPLE, file_id

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Identified", "identify", "sha256_prefix"]

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    # A FIFO put in the file's place must not block the open.
    | getattr(os, "O_NONBLOCK", 0)
)


@dataclass(frozen=True, slots=True)
class Identified:
    """A regular file as it was when it was identified."""

    stat: os.stat_result
    file_id: bytes


async def identify(path: Path) -> Identified:
    """The file's status and id, through one descriptor (in a thread).

    Raises:
        IsADirectoryError: not a regular file.
        OSError: it cannot be read.
    """
    return await asyncio.to_thread(_identify, path)


def _identify(path: Path) -> Identified:
    if not stat.S_ISREG(path.stat().st_mode):  # before opening: a FIFO, say
        raise IsADirectoryError(f"{path} is not a regular file")
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        n = min(st.st_size, FILE_ID_SAMPLE)
        head = _pread_exactly(fd, n, 0)
        tail = _pread_exactly(fd, n, st.st_size - n)
    finally:
        os.close(fd)
    return Identified(st, file_id(st.st_size, st.st_mtime_ns, head, tail))


def _pread_exactly(fd: int, length: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < length:
        piece = os.pread(fd, length - len(out), offset + len(out))
        if not piece:
            raise OSError(errno.EIO, "the file became shorter while it was read")
        out += piece
    return bytes(out)


async def sha256_prefix(path: Path, length: int) -> hashlib._Hash:
    """A SHA-256 context that has seen the first ``length`` bytes of
    ``path``, read in pieces, each in a worker thread (a cancellation stops
    between pieces).

    Raises:
        OSError: the file holds fewer bytes now (it changed since it was
            offered), or cannot be read.
    """
    digest = hashlib.sha256()
    left = length
    if left:
        async with contextlib.aclosing(read_chunks(path)) as pieces:
            async for piece in pieces:
                view = memoryview(piece)[:left]
                await asyncio.to_thread(digest.update, view)
                left -= len(view)
                if not left:
                    break
    if left:
        raise OSError(errno.EIO, "the file is shorter than when it was offered")
    return digest
