"""A TCP connection for bulk data: one fixed receive buffer, no churn.

asyncio's ``StreamReader`` receives each time into a fresh 256 KiB
``bytes``, appends it to a growing ``bytearray`` and copies it out again on
``read``. With glibc those sizes sit right at ``malloc``'s mmap threshold,
which moves with the process's own allocation history (glibc raises it to
the largest mapped block freed so far). In one process each receive was
then a fresh mapping, a page fault per 4 KiB: 20,400 faults for 64 MiB,
and a loopback stream ran at 0.6 GB/s instead of 1.1 GB/s. Which of the
two a process got depended on details as remote as how its script was
named on the command line.

:class:`TcpConnection` is an :class:`asyncio.BufferedProtocol`: the kernel
copies straight into one ring buffer (4 KiB for the handshake, enlarged
to :data:`BUFFER_SIZE` once the connection carries data), and
:meth:`TcpConnection.read` hands out pieces of at most :data:`READ_PIECE`
bytes, below glibc's smallest mmap threshold (128 KiB), so they are
recycled by the heap instead of mapped and unmapped. Backpressure: reading
from the socket pauses while less than a quarter of the buffer is free, and
:meth:`TcpConnection.write` waits while the transport's own buffer is above
its high-water mark.

Two savings for a receiver of bulk data, which gathers the stream into its
own large buffers (:meth:`TcpConnection.readinto`):

* while it waits with an empty receive buffer, the kernel copies straight
  into the reader's buffer (no second copy through the ring), as much as
  the socket holds;
* :meth:`TcpConnection.batch` asks the kernel (``SO_RCVLOWAT``) to report
  the socket readable only once that many bytes are queued, or the stream
  ended. A relay that forwards a few KiB at a time (Prosody's proxy65: 4 to
  16 KiB) otherwise costs a wake-up of the event loop, a ``recv`` and a
  reader's turn per piece, several times the CPU of the data. Bytes below
  the mark are not held back for long: once a reader has waited
  :data:`FLUSH_AFTER` seconds the mark drops to one byte until data comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BATCH",
    "BUFFER_SIZE",
    "FLUSH_AFTER",
    "INITIAL_SIZE",
    "READ_PIECE",
    "TcpConnection",
    "open_tcp",
]

#: The most one :meth:`TcpConnection.read` returns.
READ_PIECE = 64 * 1024
#: The receive buffer of a connection that carries bulk data (see
#: :meth:`TcpConnection.enlarge`).
BUFFER_SIZE = 4 * READ_PIECE
#: The receive buffer of a new connection: enough for a handshake, and
#: little for one that connects and never gets further.
INITIAL_SIZE = 4096
#: The readable mark :meth:`TcpConnection.batch` sets by default. Through
#: Prosody's proxy65, a receiver's data phase cost 4.9 s CPU/GiB with a mark
#: of 128 KiB and 3.7 with 512 KiB (the kernel caps it at half the socket's
#: largest receive buffer).
BATCH = 512 * 1024
#: A reader waiting this long (seconds) gets whatever bytes are queued, even
#: below the mark of :meth:`TcpConnection.batch`.
FLUSH_AFTER = 0.02


class TcpConnection(asyncio.BufferedProtocol):
    """One TCP connection: ``read`` with backpressure, ``write`` with drain.

    Args:
        on_made: called with the connection once it is up (for servers,
            which learn of a new connection only through their protocol).
        buffer_size: the receive buffer to start with. A handshake needs
            little; :meth:`enlarge` it once the connection carries data.
            Reading from the socket pauses while less than a quarter of it
            is free.

    Errors are the socket's: ``read`` and ``write`` raise an
    :class:`OSError` (``ConnectionResetError`` and the like) once the
    connection broke; data that arrived before stays readable first.
    """

    def __init__(
        self,
        *,
        on_made: Callable[[TcpConnection], None] | None = None,
        buffer_size: int = INITIAL_SIZE,
    ) -> None:
        self._on_made = on_made
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._start = 0  # unread data is self._buffer[self._start:self._end]
        self._end = 0
        self._low = 0  # reading pauses while less than this is free
        self._resize(buffer_size)
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._error: OSError | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A waiting reader's own buffer (see readinto), and what the kernel
        # put into it.
        self._target: memoryview | None = None
        self._into_target = False
        self._target_got = 0
        # SO_RCVLOWAT: the mark asked for (batch) and the one set now.
        self._batch = 1
        self._lowat = 1
        self._flush_after = FLUSH_AFTER
        # Bytes handed to write() and bytes the kernel delivered (moved()).
        self._written = 0
        self._received = 0

    # -- the protocol (called by the event loop) ----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._on_made is not None:
            self._on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        del sizehint
        target = self._target
        self._into_target = target is not None and self._start == self._end
        if target is not None and self._into_target:
            return target  # straight into the waiting reader's buffer
        if len(self._buffer) - self._end < self._low:  # move the rest to the front
            unread = self._end - self._start
            self._view[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._received += nbytes
        if self._into_target:
            self._into_target = False
            self._target = None
            self._target_got = nbytes
            self._wake_reader()
            return
        self._end += nbytes
        self._wake_reader()
        free = len(self._buffer) - (self._end - self._start)
        if free < self._low and not self._reading_paused:
            assert self._transport is not None
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # half-closed: we may still write, and close ourselves

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._target = None
        if exc is not None:
            self._error = (
                exc if isinstance(exc, OSError) else ConnectionAbortedError(str(exc))
            )
        self._wake_reader()
        self._wake_writers()  # write() sees the loss and raises
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        # One future per waiting writer: cancelling one wakes no other.
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the application's side -----------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (at most the buffer's size)."""
        return self._end - self._start

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    async def read(self, max_bytes: int = READ_PIECE) -> bytes:
        """Up to ``max_bytes`` (at most :data:`READ_PIECE`); ``b""`` at the end.

        Raises:
            OSError: the connection broke (after the data that came before).
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        await self._readable()
        n = min(max_bytes, READ_PIECE, self._end - self._start)
        if not n:
            return b""
        data = bytes(self._view[self._start : self._start + n])
        self._consumed(n)
        return data

    async def readinto(self, buf: memoryview) -> int:
        """Like :meth:`read`, but into ``buf`` (any size: no ``bytes`` is
        made, so there is no :data:`READ_PIECE` limit); the bytes copied, 0
        at the end (or for an empty ``buf``).

        Raises:
            OSError: the connection broke (after the data that came before).
        """
        if not buf:
            return 0
        if self._start == self._end and not self._eof:
            # Nothing buffered: wait with buf as the kernel's target.
            self._target, self._target_got = buf, 0
            try:
                await self._wait()
            finally:
                self._target = None
            got, self._target_got = self._target_got, 0
            if got:
                return got
        await self._readable()
        n = min(len(buf), self._end - self._start)
        if n:
            buf[:n] = self._view[self._start : self._start + n]
            self._consumed(n)
        return n

    async def _readable(self) -> None:
        """Wait for unread data, or the end (raising a broken connection's
        error once the data before it is read)."""
        while self._start == self._end:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    async def _wait(self) -> None:
        """Wait for the next data or the end (after a batch mark's flush
        delay, for whatever bytes are queued)."""
        if self._read_waiter is not None:
            raise RuntimeError("another task is already reading")
        loop = asyncio.get_running_loop()
        self._read_waiter = loop.create_future()
        flush = (
            loop.call_later(self._flush_after, self._set_lowat, 1)
            if self._lowat > 1
            else None
        )
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None
            if flush is not None:
                flush.cancel()
            self._set_lowat(self._batch)

    def batch(self, nbytes: int = BATCH, flush_after: float = FLUSH_AFTER) -> None:
        """Be woken for received data only once ``nbytes`` are queued in the
        kernel (or the stream ended, or a reader has waited ``flush_after``
        seconds); 1 turns it off. Where the socket does not support it,
        nothing changes."""
        self._batch = max(1, nbytes)
        self._flush_after = flush_after
        self._set_lowat(self._batch)

    def _set_lowat(self, nbytes: int) -> None:
        if nbytes == self._lowat or self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        try:
            if sock is None:
                raise OSError("no socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError:
            self._batch = 1  # not supported here: read as it comes
            return
        self._lowat = nbytes

    def _consumed(self, n: int) -> None:
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        self._maybe_resume()

    def enlarge(self, size: int = BUFFER_SIZE) -> None:
        """Grow the receive buffer to ``size`` (unread data kept in order)."""
        if size > len(self._buffer):
            self._resize(size)
            self._maybe_resume()

    def _resize(self, size: int) -> None:
        if size < 1024:
            raise ValueError("the receive buffer must hold at least 1024 bytes")
        unread = self._end - self._start
        fresh = bytearray(size)
        fresh[:unread] = self._view[self._start : self._end]
        self._buffer, self._view = fresh, memoryview(fresh)
        self._start, self._end = 0, unread
        self._low = size // 4

    def _maybe_resume(self) -> None:
        if self._reading_paused and not self._eof:
            free = len(self._buffer) - (self._end - self._start)
            if free >= self._low:
                self._reading_paused = False
                self.transport.resume_reading()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``; wait while the transport's buffer is full.

        Raises:
            OSError: the connection is closed or broke.
        """
        self._check_open()
        self.transport.write(data)
        self._written += len(data)
        while self._writing_paused:
            self._check_open()
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
        self._check_open()

    def moved(self) -> int:
        """Bytes that moved so far: received from the kernel, and written
        and taken by it (no longer in the transport's buffer). A stall
        detector watches it grow (:mod:`xfer.aio.stall`)."""
        pending = self._transport.get_write_buffer_size() if self._transport else 0
        return self._received + self._written - pending

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        await self.write(b"")

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed.done() or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        """Close after sending what is buffered (see :meth:`wait_closed`)."""
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        await asyncio.shield(self._closed)

    def abort(self) -> None:
        """Drop the connection at once, unsent data included."""
        if self._transport is not None and not self._closed.done():
            self._transport.abort()

    def reset(self) -> None:
        """Drop the connection with a TCP reset, so the peer sees an error
        rather than an orderly end."""
        # Once the connection is gone there is nothing to drop; asyncio's
        # transport, closed with data buffered, does not mark itself lost
        # when the data drains, and aborting it then fails inside asyncio.
        if self._transport is None or self._closed.done():
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        self._transport.abort()


async def open_tcp(host: str, port: int) -> TcpConnection:
    """Connect to ``host``:``port``.

    Raises:
        OSError: the connection could not be made.
    """
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(TcpConnection, host, port)
    return connection
