"""Where a received file lands, and which partial receipt it continues.

Blocking helpers (they look at the disk): the receiver runs them in a
thread. A partial receipt is the verified prefix of an earlier, broken
receipt of the same file from the same account (``xfer.aio.partial``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Protocol

from xfer.aio import partial as _partial
from xfer.names import numbered, safe_name

__all__ = ["destination", "find_partial", "free_name", "place", "resume_point"]

if TYPE_CHECKING:
    from pathlib import Path

    from xfer.aio.partial import Partial
    from xfer.jingle.files import Range


class Receivable(Protocol):
    """What placement needs to know of an offered file."""

    @property
    def peer(self) -> str: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def file_id(self) -> bytes: ...


def find_partial(incoming: Receivable, dest: Path) -> Partial | None:
    """An earlier receipt of this file from this sender into ``dest``."""
    directory = dest if dest.is_dir() else dest.parent
    found = _partial.find(
        directory,
        peer=bare(incoming.peer),
        fingerprint=incoming.fingerprint,
        file_id=incoming.file_id,
        size=incoming.size,
    )
    if found is None or (not dest.is_dir() and found.state.dest != dest.name):
        return None
    return found


def place(
    incoming: Receivable, dest: Path, overwrite: bool, max_age: float
) -> tuple[Path | None, Partial | None]:
    """Where to write (see :func:`destination`), and the partial receipt
    to go on with, if any (blocking). Old partial files go first."""
    directory = dest if dest.is_dir() else dest.parent
    if directory.is_dir():
        _partial.sweep(directory, max_age)
    found = find_partial(incoming, dest)
    if found is not None and dest.is_dir():
        path = destination(dest / found.state.dest, incoming.name, overwrite)
        if path is not None:
            return path, found
    path = destination(dest, incoming.name, overwrite)
    if path is None:
        return None, None
    if found is not None and path.name == found.state.dest:
        return path, found
    return path, None


def destination(dest: Path, name: str, overwrite: bool) -> Path | None:
    """Where to write: in a directory, the sanitised name, numbered if it is
    taken (unless ``overwrite``); a file path as given; None if it exists."""
    if not dest.is_dir():
        return None if dest.exists() and not overwrite else dest
    return free_name(dest, safe_name(name), overwrite)


def free_name(directory: Path, name: str, overwrite: bool) -> Path:
    """``name`` in ``directory``, numbered if it is taken (by anything, a
    dangling symbolic link too), unless ``overwrite``."""
    candidate = directory / name
    n = 1
    while not overwrite and (candidate.exists() or candidate.is_symlink()):
        n += 1
        candidate = directory / numbered(name, n)
    return candidate


async def resume_point(partial: Partial, offered: Range | None) -> int:
    """Where a receipt goes on: after its verified prefix, or from the start
    when the sender cannot send part of a file (no ``<range/>`` offered) or
    the prefix is gone (removed while we waited)."""
    start = partial.state.verified
    if start and (
        offered is None or not await asyncio.to_thread(_holds, partial.part, start)
    ):
        await asyncio.to_thread(partial.remove)
        partial.state = dataclasses.replace(partial.state, verified=0)
        start = 0
    return start


def _holds(path: Path, length: int) -> bool:
    """Whether ``path`` is a kept prefix of ours (see
    :func:`xfer.aio.partial.adoptable`) of at least ``length`` bytes."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return _partial.adoptable(st) and st.st_size >= length


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]
