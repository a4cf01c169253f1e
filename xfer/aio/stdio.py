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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from xfer.aio.stream import Sink

__all__ = [
    "PIPE_SIZE",
    "STREAM_PIECE",
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


async def source_pieces(
    source: AsyncIterable[bytes | bytearray | memoryview] | asyncio.StreamReader,
    size: int = STREAM_PIECE,
) -> AsyncIterator[bytes]:
    """The bytes of ``source`` in pieces of at most ``size`` (an iterable's
    larger pieces are cut, empty ones skipped)."""
    if isinstance(source, asyncio.StreamReader):
        while piece := await source.read(size):
            yield piece
        return
    async for data in source:
        view = memoryview(data).cast("B")
        for i in range(0, len(view), size):
            yield bytes(view[i : i + size])


async def input_pieces(fd: int, size: int = STREAM_PIECE) -> AsyncIterator[bytes]:
    """The bytes read from descriptor ``fd`` (standard input) until its end.

    A pipe, socket or terminal is read by the event loop (nothing waits in
    a thread, so a source that stays silent costs nothing and cancels at
    once); anything else (a file, ``/dev/null``) in a worker thread."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        # A file, or a device epoll does not take (/dev/null): read it in
        # a thread.
        while piece := await asyncio.to_thread(os.read, fd, size):
            yield piece
        return
    if stat.S_ISFIFO(mode):
        _widen_pipe(fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=size, loop=loop)
    # The event loop makes the descriptor non-blocking, which is a property
    # of the open file that the shell shares (a terminal): put it back.
    blocking = os.get_blocking(fd)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
        os.fdopen(os.dup(fd), "rb", buffering=0),
    )
    try:
        async for piece in source_pieces(reader, size):
            yield piece
    finally:
        transport.close()
        os.set_blocking(fd, blocking)


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
