"""Partial files: what a broken transfer leaves behind so that it can resume.

A receipt that breaks off (the network, the peer, a killed process) keeps its
temporary file beside the destination, holding only *verified* plaintext,
and a small state file next to it::

    .report.pdf.1a2b3c4d.xfer-part    the verified prefix (mode 0600)
    .report.pdf.1a2b3c4d.xfer-state   JSON: whose file, which file, how much

The state says how many bytes of the temporary file are on the disk for sure
(``fdatasync`` came back before it was written), so after a crash the file is
cut back to that length. The next offer of the same file (same sender, same
fingerprint, same size and file id: the id the sender's offer names the file
by, or a version 1 offer's SHA-256) continues from there: the sender seals
only the rest, under a fresh key. Nothing here is trusted for integrity:
the whole file's SHA-256 is checked against the sender's before it is
renamed into place, the prefix included.

Someone else who can write into the directory could plant files under these
names, or links to files elsewhere. A file is taken up again only if it is a
regular file of this user, with no other name and mode 0600, opened without
following a symlink (:func:`adoptable`); anything else is not ours to
continue, to write through, or to remove. Files made here are made that
way, whatever the umask.

Partial files older than a configurable age are removed by :func:`sweep`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "PART_SUFFIX",
    "STATE_SUFFIX",
    "Partial",
    "PartialState",
    "adoptable",
    "create_private",
    "find",
    "new_partial",
    "sweep",
]

PART_SUFFIX = ".xfer-part"
STATE_SUFFIX = ".xfer-state"
#: A state file is written under ``<state name>.<random>.new`` first.
_TEMP_SUFFIX = ".new"
#: Fresh temporary names tried before giving up (a clash is someone's plant).
_TEMP_TRIES = 8
#: A state file is a few hundred bytes; anything larger is not ours.
_MAX_STATE_BYTES = 8192
#: Version 2 names the file by ``file_id``; version 1 (``sha256``, a version
#: 1 offer's SHA-256, which is what such an offer is found by) is still read.
STATE_VERSION = 2
#: The only mode of a file made here, and of one taken up again.
PRIVATE_MODE = 0o600

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Opening a FIFO planted under our name would block without it.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def adoptable(st: os.stat_result) -> bool:
    """Whether a file found beside a destination may be taken for one made
    here: a regular file of this user, with no other name (a hard link is a
    second way in) and mode 0600 exactly."""
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.geteuid()
        and st.st_nlink == 1
        and stat.S_IMODE(st.st_mode) == PRIVATE_MODE
    )


def create_private(path: Path, access: int = os.O_WRONLY) -> int:
    """Create ``path``, which must not exist (not even as a symlink), mode
    0600 whatever the umask; return its descriptor (blocking).

    Raises:
        FileExistsError: something is there already.
    """
    fd = os.open(path, access | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken bits away
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def _remove_own(path: Path) -> bool:
    """Remove ``path`` (not what a symlink there points to) if it belongs to
    this user; whether it was removed (blocking)."""
    try:
        if path.lstat().st_uid != os.geteuid():
            return False
        path.unlink()
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialState:
    """What the state file records (all of it is local knowledge)."""

    peer: str  # the sender's bare JID
    fingerprint: str  # hex, the sender's OTR fingerprint
    file_id: str  # hex, what the offer names the file by
    size: int  # of the whole file
    dest: str  # the destination's file name (in the same directory)
    verified: int  # bytes of the temporary file known to be on the disk
    updated: float  # time.time() of the last update

    def matches(self, peer: str, fingerprint: bytes, file_id: bytes, size: int) -> bool:
        return (
            self.peer == peer
            and self.fingerprint == fingerprint.hex()
            and self.file_id == file_id.hex()
            and self.size == size
        )


@dataclass(slots=True)
class Partial:
    """A temporary file and its state file, in one directory."""

    part: Path
    state: PartialState

    @property
    def state_path(self) -> Path:
        return _state_path(self.part)

    def save(self, verified: int) -> None:
        """Record that ``verified`` bytes are on the disk (blocking: run it in
        a thread). Written to a fresh temporary name (created exclusively,
        never through a symlink, mode 0600), synced, then renamed.

        Raises:
            OSError: it could not be written (no temporary file is left).
        """
        self.state = PartialState(
            **{**asdict(self.state), "verified": verified, "updated": time.time()}
        )
        target = self.state_path
        data = json.dumps({"version": STATE_VERSION, **asdict(self.state)}).encode()
        temp, fd = _fresh_temp(target)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def remove(self) -> None:
        """Remove the temporary file and its state, those two names only and
        only if they are this user's files (blocking)."""
        for path in (self.part, self.state_path):
            _remove_own(path)


def _fresh_temp(target: Path) -> tuple[Path, int]:
    """A new file beside ``target`` to write its next version to."""
    for _ in range(_TEMP_TRIES):
        temp = target.with_name(f"{target.name}.{secrets.token_hex(8)}{_TEMP_SUFFIX}")
        try:
            return temp, create_private(temp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no fresh temporary name beside {target.name}")


def _state_path(part: Path) -> Path:
    return part.with_name(part.name[: -len(PART_SUFFIX)] + STATE_SUFFIX)


def temp_name(dest: Path) -> Path:
    """A fresh hidden temporary name beside ``dest`` (short enough for any
    name: a 255-byte name plus our affixes would be too long)."""
    stem = dest.name.encode("utf-8")[:160].decode("utf-8", "ignore")
    return dest.with_name(f".{stem}.{secrets.token_hex(4)}{PART_SUFFIX}")


def new_partial(
    dest: Path, *, peer: str, fingerprint: bytes, file_id: bytes, size: int
) -> Partial:
    """The record of a receipt into ``dest`` that has not started yet
    (nothing is written until :meth:`Partial.save`)."""
    return Partial(
        part=temp_name(dest),
        state=PartialState(
            peer=peer,
            fingerprint=fingerprint.hex(),
            file_id=file_id.hex(),
            size=size,
            dest=dest.name,
            verified=0,
            updated=time.time(),
        ),
    )


def _read_state(state_path: Path) -> bytes | None:
    """The contents of a state file made here (see :func:`adoptable`)."""
    fd = os.open(state_path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    try:
        if not adoptable(os.fstat(fd)):
            return None
        raw = bytearray()
        while len(raw) <= _MAX_STATE_BYTES and (piece := os.read(fd, 4096)):
            raw += piece
        return bytes(raw)
    finally:
        os.close(fd)


def _load(state_path: Path) -> PartialState | None:
    try:
        raw = _read_state(state_path)
        if raw is None or len(raw) > _MAX_STATE_BYTES:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            return None
        version = data.pop("version", None)
        if version == 1 and "sha256" in data:
            data["file_id"] = data.pop("sha256")
        elif version != STATE_VERSION:
            return None
        state = PartialState(**data)
    except (OSError, ValueError, TypeError):
        return None
    ints = (state.size, state.verified)
    strs = (state.peer, state.fingerprint, state.file_id, state.dest)
    if (
        not all(isinstance(v, int) and v >= 0 for v in ints)
        or not all(isinstance(v, str) for v in strs)
        or not isinstance(state.updated, int | float)
        or state.verified > state.size
        or "/" in state.dest
        or state.dest in ("", ".", "..")
    ):
        return None
    return state


def find(
    directory: Path, *, peer: str, fingerprint: bytes, file_id: bytes, size: int
) -> Partial | None:
    """The partial receipt of this very file from this sender in
    ``directory``, if there is one (blocking). When several match, the one
    with the most verified bytes. Files not made here (see
    :func:`adoptable`) are passed over and left alone."""
    best: Partial | None = None
    try:
        entries = list(directory.glob(f".*{STATE_SUFFIX}"))
    except OSError:
        return None
    for state_path in entries:
        state = _load(state_path)
        if state is None or not state.matches(peer, fingerprint, file_id, size):
            continue
        part = state_path.with_name(state_path.name[: -len(STATE_SUFFIX)] + PART_SUFFIX)
        try:
            st = part.lstat()
        except OSError:
            continue
        if not adoptable(st) or st.st_size < state.verified:
            continue
        if best is None or state.verified > best.state.verified:
            best = Partial(part=part, state=state)
    return best


def sweep(directory: Path, max_age: float, *, now: float | None = None) -> int:
    """Remove partial receipts in ``directory`` not touched for ``max_age``
    seconds (their state and temporary files, temporary files whose state is
    gone, and state files half written); return how many receipts were
    removed (blocking). Only this user's files are removed."""
    now = time.time() if now is None else now
    removed = 0
    try:
        parts = list(directory.glob(f".*{PART_SUFFIX}"))
        states = list(directory.glob(f".*{STATE_SUFFIX}"))
        temps = list(directory.glob(f".*{STATE_SUFFIX}.*{_TEMP_SUFFIX}"))
    except OSError:
        return 0
    for state_path in states:
        state = _load(state_path)
        try:
            touched = state.updated if state else state_path.lstat().st_mtime
        except OSError:
            continue
        if now - touched > max_age:
            part = state_path.with_name(
                state_path.name[: -len(STATE_SUFFIX)] + PART_SUFFIX
            )
            gone = [_remove_own(part), _remove_own(state_path)]
            removed += any(gone)
    for part in parts:
        try:
            st = part.lstat()
        except OSError:
            continue  # removed above
        if not os.path.lexists(_state_path(part)) and now - st.st_mtime > max_age:
            removed += _remove_own(part)
    for temp in temps:
        with contextlib.suppress(OSError):
            if now - temp.lstat().st_mtime > max_age:
                _remove_own(temp)
    return removed
