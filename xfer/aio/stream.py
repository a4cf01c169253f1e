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
from xfer.aio.stdio import STREAM_PIECE
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
    from collections.abc import AsyncIterable, Awaitable, Callable
    from concurrent.futures import Executor

    from xfer.aio.bytestream import ByteStream, ProgressCallback
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
#: Pieces read ahead of the sealer, at most (with the one being sealed and
#: the one being written, the sender holds six pieces).
READ_AHEAD = 4
#: Pieces smaller than this are sealed or opened on the event loop thread.
_INLINE = 64 * 1024
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
    pieces: AsyncIterable[bytes],
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
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(READ_AHEAD)
    reader = asyncio.ensure_future(_read_ahead(pieces, queue))
    taking = _Taking(queue)
    write: asyncio.Future[None] | None = None
    loop = asyncio.get_running_loop()
    first: float | None = None  # when the buffered plaintext came
    deadline: float | None = None  # when it must go
    try:
        while (item := await taking.next(deadline)) is not None:
            if isinstance(item, _Flush):
                out = sealer.flush()
                first = deadline = None
            elif isinstance(item, BaseException):
                if write is not None:  # what was read before goes out
                    await write
                raise item
            else:
                out = await _seal(sealer, item, state)
                progress(state.plain, None)
                first, deadline = (
                    _due(first, loop.time(), flush_interval)
                    if flushing and flush_interval is not None and sealer.buffered
                    else (None, None)
                )
            if out:
                write = await _then_write(write, stream, out, stall_timeout)
                state.sealed += len(out)
        if write is not None:
            await write
            write = None
        tail = sealer.finalize()
        await _stalling(stream.write(tail), stall_timeout)
        state.sealed += len(tail)
        if on_written is not None:
            on_written()
        await stream.close()
    finally:
        for task in (reader, write):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _due(first: float | None, now: float, interval: float) -> tuple[float, float]:
    """When plaintext that waits for a full chunk goes as a short one: once
    the source has been quiet for :data:`FLUSH_IDLE` (a message, a line:
    nothing more is coming at once), and at the latest ``interval`` after
    the first of it came (data that trickles in without a pause). Returns
    (when the first of it came, the deadline)."""
    first = now if first is None else first
    return first, min(first + interval, now + min(FLUSH_IDLE, interval))


class _Flush:
    """What :func:`_next` returns when the buffered plaintext is due."""


_FLUSH = _Flush()


class _Taking:
    """The read-ahead queue, taken a piece at a time: pieces queued already
    are joined into one of about :data:`STREAM_PIECE` (a pipe gives 64 KiB
    at a time, and fewer, larger pieces cost less to seal; nothing waits
    for more to come), and the source's end or error stays behind them."""

    def __init__(self, queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        self.queue = queue
        self.held: list[BaseException | None] = []

    async def next(
        self, deadline: float | None
    ) -> bytes | BaseException | _Flush | None:
        if self.held:
            return self.held.pop()
        item = await _next(self.queue, deadline)
        if not isinstance(item, bytes):
            return item
        parts = [item]
        size = len(item)
        while size < STREAM_PIECE and not self.queue.empty():
            more = self.queue.get_nowait()
            if not isinstance(more, bytes):
                self.held.append(more)
                break
            parts.append(more)
            size += len(more)
        return item if len(parts) == 1 else b"".join(parts)


async def _next(
    queue: asyncio.Queue[bytes | BaseException | None], deadline: float | None
) -> bytes | BaseException | _Flush | None:
    """The next piece of the source (None at its end, or why reading
    failed); :data:`_FLUSH` if ``deadline`` passes first."""
    if deadline is None:
        return await queue.get()
    try:
        async with asyncio.timeout_at(deadline):
            return await queue.get()
    except TimeoutError:
        return _FLUSH


async def _seal(sealer: Sealer, piece: bytes, state: StreamProgress) -> bytes:
    """Seal and hash ``piece`` (on worker threads if it is large); count it."""
    if len(piece) < _INLINE:
        out = sealer.update(piece)
        state.digest.update(piece)
    else:
        out = await _seal_and_hash(sealer, piece, state.digest)
    state.plain += len(piece)
    return out


async def _read_ahead(
    pieces: AsyncIterable[bytes], queue: asyncio.Queue[bytes | BaseException | None]
) -> None:
    """Read the source into ``queue`` (bounded: a full queue stops the
    reading), then None; or the error that stopped it."""
    try:
        async for piece in pieces:
            if piece:
                await queue.put(bytes(piece))
        await queue.put(None)
    except Exception as exc:  # handed to the sealing loop, which raises it
        await queue.put(exc)


async def _then_write(
    previous: asyncio.Future[None] | None,
    stream: ByteStream,
    data: bytes,
    stall_timeout: float | None,
) -> asyncio.Future[None]:
    """Wait for the previous write, then start writing ``data``: one write
    is in flight while the next piece is read and sealed."""
    if previous is not None:
        await previous
    return asyncio.ensure_future(_stalling(stream.write(data), stall_timeout))


async def _seal_and_hash(sealer: Sealer, piece: bytes, digest: hashlib._Hash) -> bytes:
    """Seal ``piece`` and hash it, on two worker threads at once."""
    sealed = asyncio.ensure_future(asyncio.to_thread(sealer.update, piece))
    try:
        await asyncio.to_thread(digest.update, piece)
    finally:
        if not sealed.done():
            await asyncio.wait({sealed})
    return await sealed


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
    try:
        while n := await _next_piece(reading, stall_timeout, state):
            piece = memoryview(sealed[0])[:n]
            sealed.reverse()
            reading = asyncio.ensure_future(
                _read_into(stream, sealed[0], stall_timeout)
            )
            if len(out) < (need := opener.output_bound(n)):  # pragma: no cover
                out = bytearray(need)  # see above: not reached
            plain, hashed = await _open(opener, piece, out, state.digest)
            if not checked and opener.header is not None:
                if not _matches(opener.header, offer):
                    raise IntegrityError
                checked = True
            if plain:
                await _deliver(plain, sink, state, limit, hashed)
                progress(state.plain, None)
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
    reading: asyncio.Future[int], stall_timeout: float | None, state: StreamProgress
) -> int:
    """Wait for a read started earlier; a failure counts what was delivered
    by now (the pieces before it included)."""
    try:
        return await reading
    except TimeoutError:
        raise StreamCut(
            state.plain, why=f"no data came for {stall_timeout:g} s"
        ) from None
    except TransportError as exc:
        raise StreamCut(state.plain, why=str(exc)) from exc


def _open_and_hash(
    opener: Opener, piece: memoryview, out: bytearray, digest: hashlib._Hash
) -> tuple[bytes, hashlib._Hash]:
    """Verify and decrypt ``piece`` (through ``out``, which must hold the
    opener's output bound); and the running hash as it will be once its
    plaintext is delivered (a copy: ``digest`` itself moves only when the
    sink took the plaintext)."""
    n = opener.update_into(piece, out)
    with memoryview(out) as view:
        plain = bytes(view[:n])
    hashed = digest.copy()
    hashed.update(plain)
    return plain, hashed


async def _open(
    opener: Opener, piece: memoryview, out: bytearray, digest: hashlib._Hash
) -> tuple[bytes, hashlib._Hash]:
    """:func:`_open_and_hash`, on a worker thread if ``piece`` is large
    (one hop for the verification, the decryption and the SHA-256)."""
    if len(piece) < _INLINE:
        return _open_and_hash(opener, piece, out, digest)
    return await asyncio.to_thread(_open_and_hash, opener, piece, out, digest)


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
