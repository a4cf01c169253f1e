"""One read of a file for several recipients: the shared reader.

A file sent to N recipients is sealed N times, under N offers with N fresh
keys (``spec/otr.md`` 5.5), but read from disk once: :class:`SharedRead`
reads it in pieces of :data:`~xfer.aio.pump.SEND_PIECE` bytes and hands the
same piece (immutable ``bytes``) to each recipient's sealer and hasher.

The policy, in full:

- **Who shares.** Every recipient named up front (``expected``) whose data
  phase starts at byte 0 (its first piece asked for) while the first piece
  is still held. A recipient that comes later (its receiver accepted late,
  after the others were past the window), or resumes from byte N after a
  break, reads the file on its own (:meth:`SharedRead.pieces` with
  ``start`` > 0, or too late): correct, just not shared.
- **Memory.** At most ``window`` pieces are held: the reader reads piece
  ``i`` only once every attached recipient has taken piece
  ``i - window``. Memory does not grow with the file or with the lag.
- **Pace.** The slowest attached recipient sets the pace (within the
  window). A recipient that stops reading altogether fails on its stall
  timeout (its bytestream write times out), leaves, and the others go on;
  one that declines, is offline or fails before its data phase is
  withdrawn (:meth:`SharedRead.withdraw`) and is not waited for.
- **Waiting for the others.** The first piece is kept until every expected
  recipient attached or withdrew, or ``join_wait`` seconds after the first
  one attached, whichever comes first: recipients whose receivers accept
  within that time share the read.

- **Hashing.** The shared pass is hashed (SHA-256) as it is read, once for
  all: :meth:`SharedRead.sha256` gives a recipient that read from byte 0
  the digest of exactly the bytes it was handed, the shared pass's if it
  took every piece from it, else the digest of its own read from byte 0
  (hashed as it was read). A recipient resuming from byte N hashes for
  itself, as any sender does.

:attr:`SharedRead.bytes_read` counts every byte read from the file, shared
or on one's own (the benchmark reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
from typing import TYPE_CHECKING

from xfer.aio.files import read_chunks
from xfer.aio.pump import SEND_PIECE

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable

__all__ = ["JOIN_WAIT", "WINDOW", "SharedRead"]

#: Pieces held at most (of :data:`SEND_PIECE` bytes each): 16 MiB.
WINDOW = 16
#: How long the first piece waits for recipients not yet attached, in seconds.
JOIN_WAIT = 5.0


class SharedRead:
    """Reads ``path`` once for the recipients ``expected`` (their keys)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        expected: Iterable[str],
        *,
        window: int = WINDOW,
        piece: int = SEND_PIECE,
        join_wait: float = JOIN_WAIT,
        hashed: bool = True,
    ) -> None:
        if window < 1 or piece < 1:
            raise ValueError("window and piece must be positive")
        self._path = os.fspath(path)
        self._pending = set(expected)
        self._window = window
        self._piece = piece
        self._join_wait = join_wait
        self._held: dict[int, bytes] = {}
        self._base = 0  # the first piece still held (or to be read)
        self._next = 0  # the next piece to read
        self._end: int | None = None  # the number of pieces, once known
        self._cursors: dict[int, int] = {}  # consumer -> next piece it takes
        self._first_attach: float | None = None
        self._fd: int | None = None
        self._reading = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._ids = 0
        self._pokes: set[asyncio.Task[None]] = set()
        #: Bytes read from the file, shared and on one's own.
        self.bytes_read = 0
        #: Bytes hashed in all (once each: the shared pass, and the reads
        #: on their own from byte 0).
        self.bytes_hashed = 0
        #: Hash as it reads (:meth:`sha256`); False: the recipients hash.
        self._hashed = hashed
        self._sha = hashlib.sha256()  # the shared pass, as it is read
        self._shared_bytes = 0
        #: Recipients that read from byte 0 on their own: their digest, length.
        self._own: dict[str, tuple[hashlib._Hash, list[int]]] = {}
        #: Recipients handed every piece from byte 0 to the end.
        self._complete: set[str] = set()
        #: Bytes read for recipients on their own (late or resuming).
        self.bytes_read_alone = 0

    def withdraw(self, key: str) -> None:
        """``key`` will not (or no longer) take part: do not wait for it."""
        self._pending.discard(key)
        self._poke()

    def pieces(self, key: str, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The file's pieces from byte ``start`` for recipient ``key``:
        shared if it can, else read on its own. Close it (or let it end)
        when done; an early close leaves the others unaffected."""
        self._complete.discard(key)
        self._own.pop(key, None)
        if start == 0 and self._base == 0 and self._end != 0:
            return self._shared(key)
        self.withdraw(key)
        return self._alone(start, key if start == 0 and self._hashed else None)

    def sha256(self, key: str, size: int) -> bytes:
        """The SHA-256 of the ``size`` bytes :meth:`pieces` (from byte 0)
        handed ``key``, to the end of the file: hashed once for all who
        took the shared pass.

        Raises:
            OSError: ``key`` was not handed exactly ``size`` bytes from byte
                0 to the end of the file (it changed size while read).
        """
        own = self._own.get(key)
        if self._hashed and key in self._complete:
            if own is not None and own[1][0] == size:
                return own[0].digest()
            if own is None and self._shared_bytes == size:
                return self._sha.digest()
        raise OSError(errno.ESTALE, "the file changed while it was read", self._path)

    async def close(self) -> None:
        """Close the file (after every recipient ended)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- internals -----------------------------------------------------------

    def _poke(self) -> None:
        """Wake the consumers waiting on a change (from any coroutine)."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        # A task, not an await: withdraw() is called from sync code. (Kept
        # until done: the loop holds tasks only weakly.)
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(notify())
            self._pokes.add(task)
            task.add_done_callback(self._pokes.discard)

    async def _alone(
        self, start: int, key: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Read on our own from ``start``; from byte 0 for ``key``, hashed."""
        own = None
        if key is not None:
            own = self._own[key] = (hashlib.sha256(), [0])
        async with contextlib.aclosing(
            read_chunks(self._path, start=start, size=self._piece)
        ) as chunks:
            async for chunk in chunks:
                data = bytes(chunk)
                self.bytes_read += len(data)
                self.bytes_read_alone += len(data)
                if own is not None:
                    await asyncio.to_thread(own[0].update, data)
                    own[1][0] += len(data)
                    self.bytes_hashed += len(data)
                yield data
        if key is not None:
            self._complete.add(key)

    async def _shared(self, key: str) -> AsyncGenerator[bytes, None]:
        # Registered only once iterated (a generator never started runs no
        # clean-up); until then ``key`` stays expected, and the first piece
        # is kept for it (within join_wait).
        self._pending.discard(key)
        if self._base > 0:  # the first piece went meanwhile: on our own
            self._poke()
            own = key if self._hashed else None
            async with contextlib.aclosing(self._alone(0, own)) as alone:
                async for chunk in alone:
                    yield chunk
            return
        self._ids += 1
        me = self._ids
        self._cursors[me] = 0
        if self._first_attach is None:
            self._first_attach = time.monotonic()
        try:
            index = 0
            while True:
                piece = await self._piece_at(index)
                if piece is None:
                    self._complete.add(key)
                    return
                index += 1
                self._cursors[me] = index
                self._drop()
                async with self._changed:
                    self._changed.notify_all()
                yield piece
        finally:
            del self._cursors[me]
            self._drop()
            self._poke()

    def _may_drop_first(self) -> bool:
        if not self._pending:
            return True
        assert self._first_attach is not None
        return time.monotonic() - self._first_attach >= self._join_wait

    def _drop(self) -> None:
        """Forget the pieces every attached recipient took."""
        if not self._cursors:
            low = self._next if not self._pending else self._base
        else:
            low = min(self._cursors.values())
        if self._base == 0 and low > 0 and not self._may_drop_first():
            return
        while self._base < low:
            self._held.pop(self._base, None)
            self._base += 1

    async def _piece_at(self, index: int) -> bytes | None:
        """Piece ``index`` (None past the end), reading it if it is the next
        one and the window allows; else wait for the others."""
        while True:
            if index in self._held:
                return self._held[index]
            if self._end is not None and index >= self._end:
                return None
            if index == self._next and index - self._base < self._window:
                async with self._reading:
                    if index == self._next:
                        await self._read_next()
                continue
            async with self._changed:
                # The wait ends on a change, or (for the first piece kept
                # for late recipients) when join_wait runs out.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self._timeout())
            self._drop()

    def _timeout(self) -> float | None:
        if self._base == 0 and self._pending and self._first_attach is not None:
            left = self._join_wait - (time.monotonic() - self._first_attach)
            return max(left, 0.01)
        return None

    async def _read_next(self) -> None:
        if self._fd is None:
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self._path, flags)
        fd = self._fd
        data = await asyncio.to_thread(self._read_and_hash, fd, self._next)
        self.bytes_read += len(data)
        if self._hashed:
            self.bytes_hashed += len(data)
        if not data:
            self._end = self._next
        else:
            self._held[self._next] = data
            self._next += 1
            if len(data) < self._piece:
                self._end = self._next
        async with self._changed:
            self._changed.notify_all()

    def _read_and_hash(self, fd: int, index: int) -> bytes:
        """Piece ``index``, fed to the shared pass's SHA-256 (a worker
        thread; pieces are read one at a time, in order)."""
        data = os.pread(fd, self._piece, index * self._piece)
        if self._hashed:
            self._sha.update(data)
            self._shared_bytes += len(data)
        return data
