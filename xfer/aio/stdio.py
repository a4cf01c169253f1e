"""Standard input and output as a stream's source and sink: the descriptors
that ``xfer send -`` reads and ``xfer receive --stdout`` writes.

A pipe, socket or terminal goes through the event loop, so a source that
stays silent costs nothing and a slow reader holds the writer back (each
write returns once the reader took enough); a file or a device the event
loop cannot wait on goes through a worker thread. The event loop makes a
descriptor non-blocking, which is a property of the open file the shell
shares with other programs (a terminal): it is put back at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import sys
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from xfer.aio.stream import Sink

__all__ = [
    "PIPE_SIZE",
    "STREAM_PIECE",
    "InputReader",
    "Readable",
    "input_pieces",
    "output_sink",
    "source_pieces",
    "stdin_is_live",
]

#: The sender reads its source in pieces of at most this size.
STREAM_PIECE = 1024 * 1024
#: The buffer asked for a pipe on standard input (Linux, best effort): a
#: pipe's default 64 KiB made every read of a fast writer 64 KiB.
PIPE_SIZE = 1024 * 1024


@runtime_checkable
class Readable(Protocol):
    """A source that reads into the caller's buffer: what has come, up to
    the buffer's length, at least one byte (it waits for that), 0 at its
    end. :func:`~xfer.aio.stream.send_stream` reads one so, without a
    ``bytes`` made per piece."""

    async def readinto(self, buf: memoryview, /) -> int: ...

    async def aclose(self) -> None: ...


async def source_pieces(
    source: AsyncIterable[bytes | bytearray | memoryview] | asyncio.StreamReader,
    size: int = STREAM_PIECE,
) -> AsyncIterator[bytes]:
    """The bytes of ``source`` in pieces of at most ``size`` (an iterable's
    larger pieces are cut, empty ones skipped; ``bytes`` that fit are not
    copied, anything else is, so the source may reuse its buffers)."""
    if isinstance(source, asyncio.StreamReader):
        while piece := await source.read(size):
            yield piece
        return
    async for data in source:
        if isinstance(data, bytes) and len(data) <= size:
            if data:
                yield data
            continue
        view = memoryview(data).cast("B")
        for i in range(0, len(view), size):
            yield bytes(view[i : i + size])


class InputReader:
    """Descriptor ``fd`` (standard input) read until its end, into the
    caller's buffers (:class:`Readable`), or as ``bytes`` pieces of at most
    ``size`` (async iteration).

    A pipe, socket or terminal is read when the event loop says it is
    readable (nothing waits in a thread, so a source that stays silent
    costs nothing and a read cancels at once); a read takes all the pipe
    holds, up to the buffer, straight from the kernel. Anything else (a
    file, ``/dev/null``, which the event loop cannot watch) is read in a
    worker thread. :meth:`aclose` puts the descriptor's blocking mode back
    (the loop needs it non-blocking, and the open file is the shell's too);
    iterating to the end does so by itself."""

    def __init__(self, fd: int, size: int = STREAM_PIECE) -> None:
        self.fd = fd
        self.size = size
        mode = os.fstat(fd).st_mode
        self._polled = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
        if stat.S_ISFIFO(mode):
            _widen_pipe(fd)
        self._blocking: bool | None = None  # the mode to put back

    async def readinto(self, buf: memoryview | bytearray, /) -> int:
        """Read what has come into ``buf``: at least one byte (waiting for
        it), 0 at the end.

        Raises:
            OSError: reading failed.
        """
        if not self._polled:
            return await asyncio.to_thread(os.readv, self.fd, [buf])
        if self._blocking is None:
            self._blocking = os.get_blocking(self.fd)
            os.set_blocking(self.fd, False)
        while True:
            try:
                return os.readv(self.fd, [buf])
            except BlockingIOError:
                await self._readable()

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)

    async def aclose(self) -> None:
        """Put the descriptor's blocking mode back (it stays open)."""
        if self._blocking is not None:
            os.set_blocking(self.fd, self._blocking)
            self._blocking = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buf = bytearray(self.size)
        try:
            while n := await self.readinto(buf):
                yield bytes(memoryview(buf)[:n])
        finally:
            await self.aclose()


def input_pieces(fd: int, size: int = STREAM_PIECE) -> InputReader:
    """Standard input (or ``fd``) as a stream's source: an
    :class:`InputReader` (reads ``size`` bytes at most when iterated)."""
    return InputReader(fd, size)


def _widen_pipe(fd: int) -> None:
    """Ask for a :data:`PIPE_SIZE` buffer in the pipe ``fd`` reads, where
    the system lets us (Linux): a fast writer then fills larger reads,
    fewer of them for the same bytes. A reader still wakes for the first
    byte, so a live source waits no longer."""
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    getting = getattr(fcntl, "F_GETPIPE_SZ", None)
    if setting is None or getting is None:
        return
    with contextlib.suppress(OSError):  # over the system's limit: keep it
        if fcntl.fcntl(fd, getting) < PIPE_SIZE:
            fcntl.fcntl(fd, setting, PIPE_SIZE)


@contextlib.asynccontextmanager
async def output_sink(fd: int) -> AsyncIterator[Sink]:
    """A sink that writes to descriptor ``fd`` (standard output): through
    the event loop for a pipe or socket (each write returns once the
    reader took enough: backpressure), in a worker thread otherwise. The
    writes are flushed when the context ends."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):

        async def write_file(data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = await asyncio.to_thread(os.write, fd, view)
                view = view[n:]

        yield write_file
        return
    loop = asyncio.get_running_loop()
    blocking = os.get_blocking(fd)  # put back at the end, as for input
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(os.dup(fd), "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write_pipe(data: bytes) -> None:
        if transport.is_closing():
            raise BrokenPipeError("the output was closed")
        writer.write(data)
        await writer.drain()

    async def flush() -> None:
        # drain() returns below the high-water mark: wait for all of it
        # (only if some is left: the reader may be gone once it has all).
        if transport.get_write_buffer_size():
            transport.set_write_buffer_limits(high=0)
            await writer.drain()

    try:
        yield write_pipe
    except BaseException:
        # What the sink took was verified: it reaches the output, if it can.
        with contextlib.suppress(Exception):
            await flush()
        raise
    else:
        await flush()
    finally:
        transport.close()
        os.set_blocking(fd, blocking)


def stdin_is_live(fd: int | None = None) -> bool:
    """Whether standard input (or ``fd``) is a terminal, a FIFO or a socket:
    data that comes when it comes, worth flushing promptly."""
    fd = sys.stdin.fileno() if fd is None else fd
    mode = os.fstat(fd).st_mode
    return os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
