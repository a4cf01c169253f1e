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
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from xfer.aio.stream import Sink

    #: What a stream is read from: pieces of bytes.
    Source = AsyncIterable[bytes | bytearray | memoryview] | asyncio.StreamReader

__all__ = [
    "PIPE_SIZE",
    "STREAM_PIECE",
    "InputReader",
    "Rate",
    "ReadAhead",
    "Readable",
    "gathered",
    "input_pieces",
    "output_sink",
    "readable",
    "stdin_is_live",
]

#: The sender reads its source in pieces of at most this size.
STREAM_PIECE = 1024 * 1024
#: The buffer asked for a pipe on standard input (Linux, best effort): a
#: pipe's default 64 KiB made every read of a fast writer 64 KiB.
PIPE_SIZE = 1024 * 1024
#: Pieces of an iterable source read ahead of the sealer, at most.
READ_AHEAD = 4
#: Data that comes at least this fast (bytes/s, over windows of
#: :data:`RATE_WINDOW` s) is bulk: read into larger pieces (:func:`gathered`,
#: and a stream's receiver batches its reads). A live source (messages, a
#: log) stays far below it and is read as it comes.
BULK_RATE = 50e6
RATE_WINDOW = 0.005
#: A read of a bulk source that took less than this gathers more ...
GATHER = 512 * 1024
#: ... for this long at most (s). A writer in 128 KiB pieces (``cat``)
#: otherwise cost the sender a seal and a hash on threads per piece.
GATHER_WAIT = 0.002


class Rate:
    """Whether data comes in fast (:data:`BULK_RATE`), from the sizes of
    its reads as they come."""

    def __init__(self) -> None:
        self.fast = False
        self.since = time.monotonic()
        self.bytes = 0

    def saw(self, n: int) -> bool:
        """Note a read of ``n`` bytes; whether the data comes fast (judged
        once per :data:`RATE_WINDOW`)."""
        self.bytes += n
        now = time.monotonic()
        if now - self.since >= RATE_WINDOW:
            self.fast = self.bytes >= BULK_RATE * (now - self.since)
            self.since, self.bytes = now, 0
        return self.fast

    def reset(self) -> None:
        """Start over, as slow."""
        self.fast, self.since, self.bytes = False, time.monotonic(), 0


async def gathered(source: Readable, buf: memoryview, n: int) -> int:
    """Read more of ``source`` into ``buf`` after its first ``n`` bytes,
    until :data:`GATHER` bytes (or the buffer) are there, for
    :data:`GATHER_WAIT` s at most; how many bytes it holds then. The end
    of the source, or its failure, stops the gathering: the next read
    sees it (a read at the end keeps returning 0, a failing one raises)."""
    want = min(GATHER, len(buf))
    try:
        async with asyncio.timeout(GATHER_WAIT):
            while n < want and (got := await source.readinto(buf[n:want])):
                n += got
    except Exception:  # noqa: S110 - the time is up, or the next read raises
        pass
    return n


@runtime_checkable
class Readable(Protocol):
    """A source that reads into the caller's buffer: what has come, up to
    the buffer's length, at least one byte (it waits for that), 0 at its
    end. :func:`~xfer.aio.stream.send_stream` reads one so, without a
    ``bytes`` made per piece."""

    async def readinto(self, buf: memoryview, /) -> int: ...

    async def aclose(self) -> None: ...


def readable(source: Source | Readable) -> Readable:
    """``source`` as a :class:`Readable`: itself if it is one, else read
    ahead (:class:`ReadAhead`)."""
    return source if isinstance(source, Readable) else ReadAhead(source)


class ReadAhead:
    """An async iterable of bytes (or a ``StreamReader``) as a
    :class:`Readable`: a task reads it ahead into a bounded queue (at most
    :data:`READ_AHEAD` pieces; a full queue stops the reading), and a read
    copies what is queued into the caller's buffer, joining pieces and
    waiting only when none is there. The source's end or error stays
    behind the pieces before it; a piece larger than the buffer is taken
    over several reads. The source may reuse its buffers: a piece that is
    not ``bytes`` is copied as it is queued."""

    def __init__(self, source: Source) -> None:
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            READ_AHEAD
        )
        self.task = asyncio.ensure_future(self._fill(source))
        self.left = memoryview(b"")  # what a read did not take of a piece
        self.end: BaseException | bool | None = False  # False: not yet

    async def _fill(self, source: Source) -> None:
        try:
            if isinstance(source, asyncio.StreamReader):
                while piece := await source.read(STREAM_PIECE):
                    await self.queue.put(piece)
            else:
                async for data in source:
                    if data:
                        held = data if isinstance(data, bytes) else bytes(data)
                        await self.queue.put(held)
            await self.queue.put(None)
        except Exception as exc:  # handed to the reader, which raises it
            await self.queue.put(exc)

    async def readinto(self, buf: memoryview, /) -> int:
        """Copy what is queued into ``buf`` (waiting for a piece if none
        is): how many bytes, 0 at the end.

        Raises:
            Exception: what reading the source raised (after its pieces).
        """
        n = 0
        while n < len(buf):
            if not self.left:
                if self.end is not False or (n and self.queue.empty()):
                    break
                item = await self.queue.get()  # cancellable: nothing taken
                if item is None or isinstance(item, BaseException):
                    self.end = item
                    break
                self.left = memoryview(item).cast("B")
            take = min(len(buf) - n, len(self.left))
            buf[n : n + take] = self.left[:take]
            self.left = self.left[take:]
            n += take
        if n == 0 and isinstance(self.end, BaseException):
            raise self.end
        return n

    async def aclose(self) -> None:
        """Stop reading the source."""
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


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
    """Ask for a :data:`PIPE_SIZE` buffer in the pipe ``fd`` reads or
    writes, where the system lets us (Linux): a fast writer then fills
    larger reads, fewer of them for the same bytes. A reader still wakes
    for the first byte, so live data waits no longer."""
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
            # Taken is written whole, even if the caller is cancelled
            # meanwhile: a cut's count of bytes written stays exact.
            loop = asyncio.get_running_loop()
            writing = loop.run_in_executor(None, _write_all, fd, data)
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                await asyncio.wait({writing})
                if not writing.cancelled():
                    writing.exception()  # a cancellation is raised already
                raise

        yield write_file
        return
    if stat.S_ISFIFO(mode):
        _widen_pipe(fd)  # fewer, larger writes (and wake-ups of the reader)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def stdin_is_live(fd: int | None = None) -> bool:
    """Whether standard input (or ``fd``) is a terminal, a FIFO or a socket:
    data that comes when it comes, worth flushing promptly."""
    fd = sys.stdin.fileno() if fd is None else fd
    mode = os.fstat(fd).st_mode
    return os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
