"""Partial files: what a broken transfer leaves behind so that it can resume.

A receipt that breaks off (the network, the peer, a killed process) keeps its
temporary file beside the destination, holding only *verified* plaintext,
and a small state file next to it::

    .report.pdf.1a2b3c4d.xfer-part    the verified prefix (mode 0600)
    .report.pdf.1a2b3c4d.xfer-state   JSON: whose file, which file, how much

The state says how many bytes of the temporary file are on the disk for sure
(``fdatasync`` came back before it was written), so after a crash the file is
cut back to that length. The next offer of the same file (same sender, same
fingerprint, same size and SHA-256) continues from there: the sender seals
only the rest, under a fresh key. Nothing here is trusted for integrity:
the whole file's SHA-256 is checked again before it is renamed into place,
the prefix included.

Partial files older than a configurable age are removed by :func:`sweep`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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
    "find",
    "new_partial",
    "sweep",
]

PART_SUFFIX = ".xfer-part"
STATE_SUFFIX = ".xfer-state"
#: A state file is a few hundred bytes; anything larger is not ours.
_MAX_STATE_BYTES = 8192
STATE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialState:
    """What the state file records (all of it is local knowledge)."""

    peer: str  # the sender's bare JID
    fingerprint: str  # hex, the sender's OTR fingerprint
    sha256: str  # hex, of the whole file
    size: int  # of the whole file
    dest: str  # the destination's file name (in the same directory)
    verified: int  # bytes of the temporary file known to be on the disk
    updated: float  # time.time() of the last update

    def matches(self, peer: str, fingerprint: bytes, sha256: bytes, size: int) -> bool:
        return (
            self.peer == peer
            and self.fingerprint == fingerprint.hex()
            and self.sha256 == sha256.hex()
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
        a thread). Written to a temporary name, synced, then renamed."""
        self.state = PartialState(
            **{**asdict(self.state), "verified": verified, "updated": time.time()}
        )
        target = self.state_path
        temp = target.with_name(target.name + ".new")
        data = json.dumps({"version": STATE_VERSION, **asdict(self.state)}).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)

    def remove(self) -> None:
        """Remove the temporary file and its state (blocking)."""
        for path in (self.part, self.state_path, self.state_path.with_suffix(".new")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _state_path(part: Path) -> Path:
    return part.with_name(part.name[: -len(PART_SUFFIX)] + STATE_SUFFIX)


def temp_name(dest: Path) -> Path:
    """A fresh hidden temporary name beside ``dest`` (short enough for any
    name: a 255-byte name plus our affixes would be too long)."""
    stem = dest.name.encode("utf-8")[:160].decode("utf-8", "ignore")
    return dest.with_name(f".{stem}.{secrets.token_hex(4)}{PART_SUFFIX}")


def new_partial(
    dest: Path, *, peer: str, fingerprint: bytes, sha256: bytes, size: int
) -> Partial:
    """The record of a receipt into ``dest`` that has not started yet
    (nothing is written until :meth:`Partial.save`)."""
    return Partial(
        part=temp_name(dest),
        state=PartialState(
            peer=peer,
            fingerprint=fingerprint.hex(),
            sha256=sha256.hex(),
            size=size,
            dest=dest.name,
            verified=0,
            updated=time.time(),
        ),
    )


def _load(state_path: Path) -> PartialState | None:
    try:
        with state_path.open("rb") as f:
            raw = f.read(_MAX_STATE_BYTES + 1)
        if len(raw) > _MAX_STATE_BYTES:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
            return None
        state = PartialState(**data)
    except (OSError, ValueError, TypeError):
        return None
    ints = (state.size, state.verified)
    strs = (state.peer, state.fingerprint, state.sha256, state.dest)
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
    directory: Path, *, peer: str, fingerprint: bytes, sha256: bytes, size: int
) -> Partial | None:
    """The partial receipt of this very file from this sender in
    ``directory``, if there is one (blocking). When several match, the one
    with the most verified bytes."""
    best: Partial | None = None
    try:
        entries = list(directory.glob(f".*{STATE_SUFFIX}"))
    except OSError:
        return None
    for state_path in entries:
        state = _load(state_path)
        if state is None or not state.matches(peer, fingerprint, sha256, size):
            continue
        part = state_path.with_name(state_path.name[: -len(STATE_SUFFIX)] + PART_SUFFIX)
        try:
            st = part.lstat()
        except OSError:
            continue
        if not part.is_file() or part.is_symlink() or st.st_size < state.verified:
            continue
        if best is None or state.verified > best.state.verified:
            best = Partial(part=part, state=state)
    return best


def sweep(directory: Path, max_age: float, *, now: float | None = None) -> int:
    """Remove partial receipts in ``directory`` not touched for ``max_age``
    seconds (their state and temporary files, and temporary files whose
    state is gone); return how many were removed (blocking)."""
    now = time.time() if now is None else now
    removed = 0
    try:
        parts = list(directory.glob(f".*{PART_SUFFIX}"))
        states = list(directory.glob(f".*{STATE_SUFFIX}"))
    except OSError:
        return 0
    for state_path in states:
        state = _load(state_path)
        try:
            touched = state.updated if state else state_path.stat().st_mtime
        except OSError:
            continue
        if now - touched > max_age:
            part = state_path.with_name(
                state_path.name[: -len(STATE_SUFFIX)] + PART_SUFFIX
            )
            Partial(part=part, state=state or _placeholder()).remove()
            removed += 1
    for part in parts:
        try:
            st = part.lstat()
        except OSError:
            continue  # removed above
        if not _state_path(part).exists() and now - st.st_mtime > max_age:
            with contextlib.suppress(OSError):
                part.unlink()
                removed += 1
    return removed


def _placeholder() -> PartialState:
    return PartialState(
        peer="", fingerprint="", sha256="", size=0, dest="x", verified=0, updated=0
    )
