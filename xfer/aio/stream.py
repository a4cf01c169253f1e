"""Streams through a bytestream, sealed: the data phase of a transfer whose
size is known only at its end (a pipe, ``spec/otr.md`` 5.4).

:func:`send_stream` reads an async source, seals each piece, hashes it and
writes it; :func:`receive_stream` reads the sealed stream, and hands each
chunk's plaintext to a sink as soon as that chunk verified. Nothing waits
for the whole stream, and nothing holds more than a few pieces:

- backpressure runs end to end: the sender reads its source only as fast as
  the bytestream takes the sealed pieces (``ByteStream.write`` waits for
  room), and the receiver reads the bytestream only as fast as its sink
  takes the plaintext (each ``await sink(...)`` returns before the next
  read). A slow consumer at the far end slows the producer at this end.
- a stream that ends before its final chunk verified never looks complete:
  :class:`~xfer.errors.StreamCut` with the count of verified bytes
  delivered. It does not resume (standard input cannot be read again).

A stream is sealed in envelope format version 2 (:func:`stream_sealer`),
whose ``Sealer.flush`` seals a short chunk before the end: with a
``flush_interval`` (a live stream), :func:`send_stream` flushes what waits
after at most that long, and the receiver's opener releases each such chunk
as soon as it verified. Without one, only full chunks and the final one go
out, which is all a pipe needs. The receiver opens version 1 too.

Standard input and output, the source and sink of ``xfer send -`` and
``xfer receive --stdout``, are in :mod:`xfer.aio.stdio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.aio.bytestream import no_progress
from xfer.aio.stdio import GATHER, STREAM_PIECE, Rate, gathered, readable
from xfer.envelope import Opener, Sealer, Suite
from xfer.envelope.format import TAG_SIZE, WORD_SIZE
from xfer.errors import (
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamCut,
    TransferTimeout,
    TransportError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from concurrent.futures import Executor

    from xfer.aio.bytestream import ByteStream, ProgressCallback
    from xfer.aio.stdio import Readable, Source
    from xfer.envelope import EnvelopeHeader
    from xfer.transfer.offer import TransferDigest, TransferOffer

    #: Takes verified plaintext; returns when it has room for more.
    Sink = Callable[[bytes], Awaitable[None]]

__all__ = [
    "STREAM_PIECE",
    "StreamProgress",
    "can_flush",
    "receive_stream",
    "send_stream",
    "stream_sealer",
]

#: The receiver reads the bytestream into buffers of this size (a read
#: takes what has come: large pieces only when the receiver is behind).
READ_PIECE = 1024 * 1024
#: The sender writes sealed pieces to the stream in slices of this size.
WRITE_SLICE = 256 * 1024
#: Pieces smaller than this are sealed on the event loop thread.
_INLINE = 64 * 1024
#: Pieces smaller than this are opened on the event loop thread: a receiver
#: that keeps up reads what has come, often 64-256 KiB, and a thread hop per
#: piece cost more than it gained (a receiver's CPU per GiB in 64 KiB
#: pieces, 2-core machine: about 7.5 s so, 8-10 s with a hop from 64 KiB;
#: 4-5 s in 1 MiB pieces).
_INLINE_OPEN = 256 * 1024
#: While a stream comes in fast (``xfer.aio.stdio.BULK_RATE``), the
#: receiver is woken once this much came (``SO_RCVLOWAT``), or
#: :data:`READ_FLUSH` s after it began to wait, not for each piece: a
#: receiver that keeps up otherwise reads 64 KiB at a time and pays a
#: read, a delivery and a write each (2-core machine, SOCKS5 at 80 MB/s
#: into a file: 7-8 s CPU/GiB so, 5-6 s batched).
READ_BATCH = 512 * 1024
READ_FLUSH = 0.005
#: The default flush interval of a live stream (s): the longest that data
#: waits for a full chunk.
FLUSH_INTERVAL = 0.015
#: A live stream's waiting data goes once the source has been quiet this
#: long (s), sooner than the flush interval: a burst of writes still shares
#: a chunk, and a lone message does not wait for the interval.
FLUSH_IDLE = 0.001
#: The envelope format version of streams (:func:`stream_sealer`): 2, whose
#: chunks may be short before the end (flushed), so a live stream's data
#: need not wait for a full chunk (``spec/envelope.md``).
STREAM_VERSION = 2


def stream_sealer(
    key: bytes,
    offer: TransferOffer,
    *,
    executor: Executor | None = None,
    workers: int = 2,
) -> Sealer:
    """The sealer of a stream offered by ``offer``, in envelope format
    version :data:`STREAM_VERSION` (2: it can :meth:`~Sealer.flush`)."""
    return Sealer.announced(
        key,
        salt=offer.salt,
        transfer_id=offer.transfer_id,
        suite=Suite(offer.suite),
        chunk_size=offer.chunk_size,
        executor=executor,
        workers=workers,
        version=STREAM_VERSION,
    )


def can_flush(sealer: Sealer) -> bool:
    """Whether ``sealer`` can seal a short chunk before the end (envelope
    format version 2): what a live stream needs."""
    return sealer.header.version >= 2


@dataclass(kw_only=True)
class StreamProgress:
    """How far a stream got, readable after it failed: plaintext bytes
    sealed and written (the sender) or verified and delivered (the
    receiver), and their running SHA-256."""

    plain: int = 0
    sealed: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


# -- the sender ----------------------------------------------------------------------


async def send_stream(
    pieces: Source | Readable,
    stream: ByteStream,
    sealer: Sealer,
    *,
    state: StreamProgress,
    progress: ProgressCallback = no_progress,
    on_written: Callable[[], object] | None = None,
    stall_timeout: float | None = None,
    flush_interval: float | None = None,
) -> None:
    """Seal ``pieces`` onto ``stream`` until they end, then the final chunk,
    and close it. ``state`` counts the plaintext and sealed bytes written
    and hashes the plaintext (read it after a failure too).

    ``pieces`` is read into one buffer of :data:`STREAM_PIECE` bytes: a
    :class:`~xfer.aio.stdio.Readable` (standard input) straight into it, an
    iterable's pieces through a bounded read-ahead (they are joined when
    several wait). Each buffer is sealed into one of two output buffers
    (and hashed beside it), which alternate: one is written while the next
    is sealed. A :class:`~xfer.aio.stdio.Readable` is closed at the end.

    With ``flush_interval`` and a sealer that can flush (:func:`can_flush`),
    plaintext that waits for a full chunk is sealed as a short chunk and
    sent once the source has paused for :data:`FLUSH_IDLE`, and at most
    ``flush_interval`` seconds after it came. ``on_written`` is called
    once the last sealed byte is written, before closing. A write that
    cannot go on for ``stall_timeout`` seconds (the receiver stopped
    reading) fails.

    Raises:
        TransportError (TransferTimeout): the stream failed or stalled.
        OSError: reading the source failed.
    """
    flushing = flush_interval is not None and can_flush(sealer)
    source = readable(pieces)
    buf = bytearray(STREAM_PIECE)
    bound = sealer.output_bound(STREAM_PIECE + sealer.header.chunk_size)
    outs = [bytearray(bound), bytearray(bound)]
    writing = _Writing(stream, stall_timeout)
    loop = asyncio.get_running_loop()
    first: float | None = None  # when the buffered plaintext came
    deadline: float | None = None  # when it must go
    rate = Rate()  # a fast source is read into larger pieces
    try:
        while True:
            try:
                n = await _read(source, buf, deadline)
                if n and rate.fast and n < GATHER:
                    n = await gathered(source, memoryview(buf), n)
                rate.saw(n or 0)
            except Exception:
                await writing.drain()  # what was read before goes out
                raise
            if n == 0:
                break
            if n is None:  # the buffered plaintext is due
                state.sealed += await writing.start(sealer.flush())
                first = deadline = None
                continue
            if len(outs[0]) < (need := sealer.output_bound(n)):  # pragma: no cover
                outs[0] = bytearray(need)  # see bound: not reached
            m = await _seal(sealer, memoryview(buf)[:n], outs[0], state)
            progress(state.plain, None)
            if flushing and flush_interval is not None and sealer.buffered:
                first, deadline = _due(first, loop.time(), flush_interval)
            else:
                first = deadline = None
            state.sealed += await writing.start(memoryview(outs[0])[:m])
            outs.reverse()  # the other one is free once this write began
        await writing.drain()
        tail = sealer.finalize()
        await _stalling(stream.write(tail), stall_timeout)
        state.sealed += len(tail)
        if on_written is not None:
            on_written()
        await stream.close()
    finally:
        await writing.cancel()
        await source.aclose()


class _Writing:
    """Sealed output written to the stream, one write in flight: starting
    one waits for the one before, so the buffer that one came from is free
    once the next starts (two output buffers alternate)."""

    def __init__(self, stream: ByteStream, stall_timeout: float | None) -> None:
        self.stream = stream
        self.stall_timeout = stall_timeout
        self.write: asyncio.Future[None] | None = None

    async def start(self, data: bytes | memoryview) -> int:
        """Begin writing ``data`` once the write before ended; its length."""
        await self.drain()
        if data:
            self.write = asyncio.ensure_future(
                _write_out(self.stream, data, self.stall_timeout)
            )
        return len(data)

    async def drain(self) -> None:
        if self.write is not None:
            write, self.write = self.write, None
            await write

    async def cancel(self) -> None:
        if self.write is not None and not self.write.done():
            self.write.cancel()
            with contextlib.suppress(BaseException):
                await self.write


def _due(first: float | None, now: float, interval: float) -> tuple[float, float]:
    """When plaintext that waits for a full chunk goes as a short one: once
    the source has been quiet for :data:`FLUSH_IDLE` (a message, a line:
    nothing more is coming at once), and at the latest ``interval`` after
    the first of it came (data that trickles in without a pause). Returns
    (when the first of it came, the deadline)."""
    first = now if first is None else first
    return first, min(first + interval, now + min(FLUSH_IDLE, interval))


async def _read(source: Readable, buf: bytearray, deadline: float | None) -> int | None:
    """The next bytes of the source, read into ``buf``: how many (0 at its
    end), or None if ``deadline`` passes first (nothing was read then)."""
    if deadline is None:
        return await source.readinto(memoryview(buf))
    try:
        async with asyncio.timeout_at(deadline):
            return await source.readinto(memoryview(buf))
    except TimeoutError:
        return None


async def _seal(
    sealer: Sealer, piece: memoryview, out: bytearray, state: StreamProgress
) -> int:
    """Seal ``piece`` into ``out`` and hash it (on two worker threads at
    once if it is large: both release the GIL); count it. The sealed
    bytes."""
    if len(piece) < _INLINE:
        m = sealer.update_into(piece, out)
        state.digest.update(piece)
    else:
        sealed = asyncio.ensure_future(
            asyncio.to_thread(sealer.update_into, piece, out)
        )
        try:
            await asyncio.to_thread(state.digest.update, piece)
        finally:
            if not sealed.done():
                await asyncio.wait({sealed})  # it writes into out: let it end
        m = await sealed
    state.plain += len(piece)
    return m


async def _write_out(
    stream: ByteStream, data: bytes | memoryview, stall_timeout: float | None
) -> None:
    """Write ``data`` in slices of :data:`WRITE_SLICE`, each within
    ``stall_timeout``: the transport copies what the socket does not take
    at once, so a slice at a time keeps that copy small."""
    for i in range(0, len(data), WRITE_SLICE):
        await _stalling(stream.write(data[i : i + WRITE_SLICE]), stall_timeout)


async def _stalling(work: Awaitable[None], timeout: float | None) -> None:
    try:
        async with asyncio.timeout(timeout):
            await work
    except TimeoutError:
        raise TransferTimeout(f"the peer took no data for {timeout:g} s") from None


# -- the receiver --------------------------------------------------------------------


def _matches(header: EnvelopeHeader, offer: TransferOffer) -> bool:
    """Whether a stream's header carries the offer's parameters (its
    format version may be 1 or 2: ``spec/otr.md`` 5.4)."""
    return (
        header.suite == offer.suite
        and header.chunk_size == offer.chunk_size
        and header.salt == offer.salt
        and header.transfer_id == offer.transfer_id
    )


async def receive_stream(
    stream: ByteStream,
    key: bytes,
    offer: TransferOffer,
    sink: Sink,
    *,
    state: StreamProgress,
    digest: Callable[[], Awaitable[TransferDigest]],
    progress: ProgressCallback = no_progress,
    stall_timeout: float | None = None,
    executor: Executor | None = None,
    limit: int | None = None,
) -> bytes:
    """Verify the sealed stream of the stream ``offer`` and hand each
    chunk's plaintext to ``sink`` as soon as it verified; return the
    SHA-256 of the whole plaintext once the final chunk verified and the
    sender's digest (awaited with ``digest``) agrees with what was
    delivered. ``state`` counts and hashes the plaintext delivered (read it
    after a failure too). A live stream may be silent for long: without
    ``stall_timeout``, the read waits as long as the bytestream lives. No
    more than ``limit`` bytes of plaintext are handed on, if given.

    Raises:
        StreamCut: the bytestream ended (or broke) before the final chunk;
            ``verified`` is the count delivered.
        IntegrityError, EnvelopeFormatError: a chunk did not verify, the
            header is not the offer's, or the digest disagrees (or did not
            come).
        RemoteProtocolError: the stream is longer than ``limit``.
        OSError: the sink failed.
    """
    opener = Opener(
        key,
        transfer_id=offer.transfer_id,
        max_chunk_size=offer.chunk_size,
        executor=executor,
    )
    checked = False
    # Two buffers of the sealed stream alternate: the next read fills one
    # while the piece in the other is opened and delivered. A read takes
    # what has come (it never waits for more), up to a whole buffer.
    sealed = [bytearray(READ_PIECE), bytearray(READ_PIECE)]
    # While a piece is opened, the stream's buffer (SOCKS5) takes what
    # comes, a whole read's worth: pieces grow when the receiver is behind.
    buffer_reads = getattr(stream, "buffer_reads", None)
    if buffer_reads is not None:
        buffer_reads(READ_PIECE)
    # The plaintext of a piece: at most the piece and the chunk the opener
    # held back (its word and tag included).
    out = bytearray(READ_PIECE + WORD_SIZE + offer.chunk_size + TAG_SIZE)
    reading = asyncio.ensure_future(_read_into(stream, sealed[0], stall_timeout))
    batching = _Batching(stream)
    # A piece's plaintext is handed on (hashed, then given to the sink)
    # while the next piece is opened: one delivery at a time, in order.
    delivery = _Delivery(sink, state, limit, progress)
    running = state.digest  # the hash of what was opened (not changed in place)
    try:
        while n := await _next_piece(reading, stall_timeout, state, delivery):
            piece = memoryview(sealed[0])[:n]
            batching.saw(n)
            sealed.reverse()
            reading = asyncio.ensure_future(
                _read_into(stream, sealed[0], stall_timeout)
            )
            if len(out) < (need := opener.output_bound(n)):  # pragma: no cover
                out = bytearray(need)  # see above: not reached
            # The hash goes on from the piece before's, whose delivery may
            # still be under way.
            plain, running = await _open(opener, piece, out, running)
            if not checked and opener.header is not None:
                if not _matches(opener.header, offer):
                    raise IntegrityError
                checked = True
            await delivery.give(plain, running)
        await delivery.drain()
    except BaseException as exc:
        # What verified before the failure still goes out (unless this is
        # a cancellation); the failure is the one raised.
        await delivery.stop(wait=isinstance(exc, Exception))
        raise
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
    try:
        tail = opener.finalize()
    except (IntegrityError, EnvelopeFormatError):
        # Whatever the last bytes were, the end was not the sender's.
        raise StreamCut(
            state.plain, why="the stream ended before its final chunk"
        ) from None
    if tail:
        await _deliver(tail, sink, state, limit)
    progress(state.plain, None)
    said = await digest()
    ours = state.digest.digest()
    if said.size != state.plain or said.sha256 != ours:
        raise IntegrityError
    return ours


async def _read_into(
    stream: ByteStream, buf: bytearray, stall_timeout: float | None
) -> int:
    """The next bytes of the sealed stream, copied into ``buf``: how many (0
    at its end). A stream with ``readinto`` (SOCKS5) hands over all it has
    buffered, or what the kernel has once something came, without a
    ``bytes`` made; any other is read and copied."""
    view = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    async with asyncio.timeout(stall_timeout):
        if readinto is not None:
            n: int = await readinto(view)
            return n
        piece = await stream.read(len(view))
    if len(piece) > len(view):
        raise LocalProtocolError("the stream returned more than was asked for")
    view[: len(piece)] = piece
    return len(piece)


async def _next_piece(
    reading: asyncio.Future[int],
    stall_timeout: float | None,
    state: StreamProgress,
    delivery: _Delivery,
) -> int:
    """Wait for a read started earlier; a failure counts what was delivered
    by now (the pieces before it included: their delivery ends first)."""
    try:
        return await reading
    except TimeoutError:
        await delivery.drain()
        raise StreamCut(
            state.plain, why=f"no data came for {stall_timeout:g} s"
        ) from None
    except TransportError as exc:
        await delivery.drain()
        raise StreamCut(state.plain, why=str(exc)) from exc


class _Batching:
    """Reads of a stream batched while it comes in fast (:class:`Rate`), and
    read as they come otherwise: a live stream's message is never held
    back, and once a fast stream slows, its data waits :data:`READ_FLUSH`
    at most, once."""

    def __init__(self, stream: ByteStream) -> None:
        self.batch: Callable[[int, float], None] | None = getattr(
            stream, "batch_reads", None
        )
        self.on = False
        self.rate = Rate()

    def saw(self, n: int) -> None:
        """Note a read of ``n`` bytes (before the next read begins)."""
        if self.batch is None:
            return
        if self.on:
            if n < READ_BATCH // 4:  # the mark waited out: the stream slowed
                self.on = False
                self.batch(1, READ_FLUSH)
                self.rate.reset()
        elif self.rate.saw(n):
            self.on = True
            self.batch(READ_BATCH, READ_FLUSH)


def _open_piece(
    opener: Opener, piece: memoryview, out: bytearray, digest: hashlib._Hash
) -> tuple[bytes, hashlib._Hash]:
    """Verify and decrypt ``piece`` (through ``out``, which must hold the
    opener's output bound): its plaintext (a copy of its own), and the
    running hash as it will be once that is delivered (a copy: ``digest``
    itself moves only when the sink took the plaintext)."""
    n = opener.update_into(piece, out)
    with memoryview(out) as view:
        plain = bytes(view[:n])
    hashed = digest.copy()
    hashed.update(plain)
    return plain, hashed


async def _open(
    opener: Opener, piece: memoryview, out: bytearray, digest: hashlib._Hash
) -> tuple[bytes, hashlib._Hash]:
    """:func:`_open_piece`, on a worker thread if ``piece`` is large (one
    hop for the verification, the decryption and the SHA-256)."""
    if len(piece) < _INLINE_OPEN:
        return _open_piece(opener, piece, out, digest)
    return await asyncio.to_thread(_open_piece, opener, piece, out, digest)


class _Delivery:
    """Verified plaintext handed to the sink in the background, one piece
    at a time and in order: starting one waits for the one before."""

    def __init__(
        self,
        sink: Sink,
        state: StreamProgress,
        limit: int | None,
        progress: ProgressCallback,
    ) -> None:
        self.sink = sink
        self.state = state
        self.limit = limit
        self.progress = progress
        self.task: asyncio.Future[None] | None = None

    async def give(self, plain: bytes, hashed: hashlib._Hash) -> None:
        """Begin delivering ``plain`` once the delivery under way ended;
        ``hashed``: the running hash with it in."""
        await self.drain()
        if plain:
            self.task = asyncio.ensure_future(self._run(plain, hashed))

    async def _run(self, plain: bytes, hashed: hashlib._Hash) -> None:
        await _deliver(plain, self.sink, self.state, self.limit, hashed)
        self.progress(self.state.plain, None)

    async def drain(self) -> None:
        """Wait for the delivery under way; raises what it raised."""
        if self.task is not None:
            task, self.task = self.task, None
            await task

    async def stop(self, *, wait: bool) -> None:
        """End the delivery under way, letting it finish if ``wait``; what
        it raises is not raised here (a failure is being raised already)."""
        if self.task is not None and not self.task.done() and not wait:
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.drain()


async def _deliver(
    plain: bytes,
    sink: Sink,
    state: StreamProgress,
    limit: int | None,
    hashed: hashlib._Hash | None = None,
) -> None:
    """Hand verified plaintext to the sink; count and hash it once the sink
    took it (``hashed``: the running hash with ``plain`` in it already)."""
    if limit is not None and state.plain + len(plain) > limit:
        # What fits is verified: it goes, and nothing after it.
        await _deliver(plain[: limit - state.plain], sink, state, None)
        raise RemoteProtocolError(f"the stream is longer than {limit} bytes")
    await sink(plain)
    if hashed is None:
        state.digest.update(plain)
    else:
        state.digest = hashed
    state.plain += len(plain)
