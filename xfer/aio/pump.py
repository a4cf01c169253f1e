"""Files through a bytestream, sealed: the data phase of one transfer.

:func:`send_sealed` reads a file, seals it and writes the sealed stream to a
:class:`~xfer.aio.bytestream.ByteStream`, hashing the plaintext in the same
pass; :func:`receive_sealed` reads one, verifies and decrypts it chunk by
chunk into an :class:`~xfer.aio.files.AtomicWriter`, and renames the file
into place only after the final chunk verified *and* the plaintext matches
the size and the SHA-256 of the sender: the OTR offer's (version 1), or the
digest that follows the data inside OTR (version 2). Anything else raises,
and the temporary file is gone.

Sealing and opening run in worker threads; while one piece is sealed the
previous one is being written, so the CPU and the network overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from xfer.aio.bytestream import no_progress
from xfer.aio.files import (
    READ_SIZE,
    AtomicWriter,
    hash_prefix,
    read_chunks,
)
from xfer.aio.stall import moved_counter, stalling
from xfer.envelope.format import TAG_SIZE
from xfer.errors import IntegrityError, LocalProtocolError
from xfer.transfer.verify import Verifier

if TYPE_CHECKING:
    import hashlib
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from concurrent.futures import Executor

    from xfer.aio.bytestream import ByteStream, ProgressCallback
    from xfer.aio.partial import Partial
    from xfer.envelope import Sealer
    from xfer.transfer.offer import TransferDigest, TransferOffer

    #: Waits for the sender's digest of a version 2 offer (and raises
    #: IntegrityError if it does not come in time).
    DigestWait = Callable[[], Awaitable[TransferDigest]]

__all__ = ["confirm_sealed", "receive_sealed", "send_sealed"]

#: Pieces smaller than this are opened on the event loop thread: a thread hop
#: costs more than the work.
_INLINE = 64 * 1024
#: The receiver gathers the stream into pieces of this size (a SOCKS5 read
#: returns up to 256 KiB, IBB a block at a time) before verifying them.
GATHER = 1024 * 1024
#: The sender reads, seals and hashes the file in pieces of this size (two
#: threads seal one: small pieces keep the pipeline to the receiver full).
SEND_PIECE = 1024 * 1024
#: The sender writes sealed pieces to the stream in slices of this size ...
WRITE_SLICE = 256 * 1024
#: ... or, where a slice takes longer than this (seconds), smaller ones ...
SLICE_TIME = 0.5
#: ... down to this size.
MIN_SLICE = 16 * 1024
#: A piece being gathered goes to be verified once its first bytes are
#: this old (seconds), full or not.
FLUSH_AFTER = 0.5
#: Gathered pieces waiting to be verified, at most. The receive ring holds
#: this many buffers of :data:`GATHER` bytes and two more (the one being
#: filled, the one being verified), allocated once: memory does not grow
#: with the file.
QUEUED = 2


async def send_sealed(
    source: str | os.PathLike[str],
    stream: ByteStream,
    sealer: Sealer,
    *,
    total: int,
    start: int = 0,
    progress: ProgressCallback = no_progress,
    on_written: Callable[[], object] | None = None,
    stall_timeout: float | None = None,
    digest: hashlib._Hash | None = None,
    pieces: AsyncGenerator[bytes | memoryview, None] | None = None,
) -> int:
    """Seal ``source`` (from byte ``start`` on) onto ``stream`` and close it;
    return the sealed bytes sent.

    ``progress`` counts plaintext bytes (``start`` included) against
    ``total``; ``on_written`` is called once the last sealed byte is
    written, before closing. Two output buffers alternate, so piece n+1 is
    sealed while piece n is written. A write during which the stream moves
    no byte for ``stall_timeout`` seconds (the peer stopped reading) fails;
    a slow one that keeps moving does not.

    Each piece read is also fed to ``digest`` (in order, on a worker thread
    beside the one that seals it): the file is read once for both. For a
    whole-file hash, ``digest`` has seen bytes ``[0, start)`` already
    (:func:`xfer.aio.source.sha256_prefix`); by the time ``on_written``
    runs it has seen the whole file.

    ``pieces``, if given, yields the file's bytes from ``start`` on instead
    of ``source`` being read here (pieces of at most :data:`SEND_PIECE`
    bytes, each valid until the next is asked for): a file read once for
    several recipients (:mod:`xfer.aio.fanout`). It is closed at the end.

    Raises:
        TransportError (TransferTimeout): the stream failed or stalled.
        OSError: reading failed.
    """
    # The sealed output of a piece is at most the piece, a pending partial
    # chunk, a tag per chunk and the header: sized once, for every piece.
    chunk = sealer.header.chunk_size
    bound = sealer.output_bound(SEND_PIECE + chunk)
    buffers = [bytearray(bound), bytearray(bound)]
    sent = 0
    done = start
    write: asyncio.Future[None] | None = None
    writes = _Writes(stream, stall_timeout, progress, total)
    # One read buffer: a piece is sealed (and hashed) before the next read.
    reading = (
        read_chunks(source, start=start, into=bytearray(SEND_PIECE))
        if pieces is None
        else pieces
    )
    try:
        async with contextlib.aclosing(reading) as read:
            async for piece in read:
                buf = buffers[0]
                need = sealer.output_bound(len(piece))
                if len(buf) < need:  # pragma: no cover - see bound
                    buf = buffers[0] = bytearray(need)
                n = await _seal_and_hash(sealer, piece, buf, digest)
                if write is not None:
                    await write
                write = asyncio.ensure_future(
                    writes.out(memoryview(buf)[:n], done, len(piece))
                )
                buffers.reverse()
                sent += n
                done += len(piece)
        if write is not None:
            await write
            write = None
        tail = sealer.finalize()
        await _stalling(stream.write(tail), stall_timeout, stream)
        sent += len(tail)
        if on_written is not None:
            on_written()  # every byte is out; closing may still take a moment
        await stream.close()
    finally:
        if write is not None and not write.done():
            write.cancel()
    progress(done, total)
    return sent


class _Writes:
    """Writes the sealed pieces to the stream in slices, failing once the
    stream moved nothing for ``stall_timeout`` (the transport copies what
    the socket does not take at once, so a slice at a time keeps that copy,
    and its buffer, small), and reports a piece's plaintext as done as its
    slices are taken: progress runs with the link, not ahead of it.

    A slice is :data:`WRITE_SLICE` bytes on a fast link; where one takes
    longer than :data:`SLICE_TIME` it halves (down to :data:`MIN_SLICE`),
    so a slow link still shows progress every second or so.
    """

    def __init__(
        self,
        stream: ByteStream,
        stall_timeout: float | None,
        progress: ProgressCallback,
        total: int,
    ) -> None:
        self._stream = stream
        self._stall_timeout = stall_timeout
        self._progress = progress
        self._total = total
        self._slice = WRITE_SLICE

    async def out(self, data: memoryview, before: int, plain: int) -> None:
        """Write ``data``, the sealed form of ``plain`` plaintext bytes that
        follow the first ``before``."""
        loop = asyncio.get_running_loop()
        stream, sealed, i = self._stream, len(data), 0
        while i < sealed:
            size = self._slice
            began = loop.time()
            await _stalling(
                stream.write(data[i : i + size]), self._stall_timeout, stream
            )
            took = loop.time() - began
            i = min(i + size, sealed)
            self._progress(before + plain * i // sealed, self._total)
            if took > SLICE_TIME:
                self._slice = max(MIN_SLICE, size // 2)
            elif took < SLICE_TIME / 4:
                self._slice = min(WRITE_SLICE, size * 2)


async def _seal_and_hash(
    sealer: Sealer,
    piece: bytes | memoryview,
    buf: bytearray,
    digest: hashlib._Hash | None,
) -> int:
    """Seal ``piece`` into ``buf`` and feed it to ``digest``, on two worker
    threads at once (both release the GIL); the sealed bytes."""
    sealed = asyncio.ensure_future(asyncio.to_thread(sealer.update_into, piece, buf))
    if digest is not None:
        try:
            await asyncio.to_thread(digest.update, piece)
        finally:
            if not sealed.done():
                await asyncio.wait({sealed})  # it writes into buf: let it end
    return await sealed


async def _stalling(
    work: Awaitable[None], timeout: float | None, stream: ByteStream
) -> None:
    """``work``, a write, failing once the stream moved nothing for
    ``timeout`` seconds (:func:`xfer.aio.stall.stalling`): a slow link
    takes as long as it needs."""
    await stalling(
        work,
        timeout,
        moved_counter(stream),
        "the peer took no data for {timeout:g} s",
    )


#: A gathered piece (a buffer of the ring, and how many of its bytes hold
#: data), the end of the stream (None), or why reading failed.
_Item = tuple[bytearray, int] | BaseException | None


async def _gather(
    stream: ByteStream,
    free: asyncio.Queue[bytearray],
    queue: asyncio.Queue[_Item],
    stall_timeout: float | None,
) -> None:
    """Read the stream into the buffers of the ring, :data:`GATHER` bytes
    each (less at the end, or when the stream is slow: a piece goes on once
    its first bytes are :data:`FLUSH_AFTER` seconds old, so progress shows
    and a break loses none of it): take a free one, fill it, queue it. The buffers
    are the receiver's, reused for the whole stream: no piece is a new
    object, nothing is joined or copied but into them. A stream that can
    (SOCKS5) wakes it for large reads only, also through a relay that
    forwards a few KiB at a time."""
    batch = getattr(stream, "batch_reads", None)
    if batch is not None:
        batch()
    loop = asyncio.get_running_loop()
    buf: bytearray | None = None
    n = 0
    try:
        while True:
            buf = await free.get()
            view = memoryview(buf)
            n = 0
            first = 0.0  # when the piece's first bytes came
            while n < GATHER:
                got = await _fill(stream, view[n:], stall_timeout)
                if not got:  # the stream ended
                    if n:
                        await queue.put((buf, n))
                    await queue.put(None)
                    return
                n += got
                if n == got:
                    first = loop.time()
                elif loop.time() - first >= FLUSH_AFTER:
                    break  # a slow stream: verify (and show) what came so far
            piece, buf = (buf, n), None
            await queue.put(piece)
    except Exception as exc:  # handed to the consumer, which raises it
        if buf is not None and n:
            # What came before the break is verified and kept like the rest.
            await queue.put((buf, n))
        await queue.put(exc)


async def _fill(
    stream: ByteStream, view: memoryview, stall_timeout: float | None
) -> int:
    """The stream's next bytes, copied into ``view``: how many (0 at the
    end). A stream with ``readinto`` (SOCKS5) copies straight from its
    receive buffer; any other is read and copied."""
    readinto = getattr(stream, "readinto", None)
    why = "no data came for {timeout:g} s"
    moved = moved_counter(stream)
    if readinto is not None:
        n: int = await stalling(readinto(view), stall_timeout, moved, why)
        return n
    piece = await stalling(stream.read(len(view)), stall_timeout, moved, why)
    n = len(piece)
    if n > len(view):
        raise LocalProtocolError("the stream returned more than was asked for")
    view[:n] = piece
    return n


async def confirm_sealed(
    stream: ByteStream,
    key: bytes,
    offer: TransferOffer,
    path: str | os.PathLike[str],
    *,
    sealed_size: int,
    stall_timeout: float | None = None,
    digest: DigestWait | None = None,
) -> bytes:
    """Check that ``path``, a file received earlier, is the one ``offer``
    announces, against a stream that holds none of it: the sender was asked
    for the range after the end of the file (it did not learn that the
    earlier receipt finished), so the stream carries only the envelope's
    header and empty final chunk, sealed under this offer's key. The file
    is hashed against the offer's SHA-256 (version 1) or the sender's
    digest (version 2, awaited with ``digest`` after the stream); nothing is
    written. ``sealed_size`` is that of an empty rest (the header and one
    empty chunk). Returns the file's SHA-256.

    Raises:
        IntegrityError, EnvelopeFormatError: the stream or the file is not
            the one the offer announced (or the digest did not come).
        StreamTruncated, TransportError: the stream broke or stalled.
    """
    size = offer.size
    verifier = Verifier(key, offer, sealed_size, executor=None, start=size)
    await asyncio.to_thread(_hash_file, Path(path), size, verifier.digest)
    buf = bytearray(verifier.opener.output_bound(READ_SIZE))
    while piece := await _read(stream, stall_timeout):
        if verifier.feed(piece, buf):  # plaintext past the end: not this file
            raise IntegrityError
    if verifier.finish():
        raise IntegrityError
    return await _checked(verifier, offer, digest)


async def _checked(
    verifier: Verifier, offer: TransferOffer, digest: DigestWait | None
) -> bytes:
    """After :meth:`Verifier.finish`: the plaintext's SHA-256, once it is
    the sender's (the offer's, which ``finish`` checked, or the digest that
    follows the data of a version 2 offer)."""
    if offer.sha256 is not None:
        return verifier.check(offer.sha256, offer.size)
    if digest is None:
        raise LocalProtocolError("a version 2 offer is checked against its digest")
    said = await digest()
    return verifier.check(said.sha256, said.size)


async def _read(stream: ByteStream, stall_timeout: float | None) -> bytes:
    """The stream's next bytes (empty at its end), or a stall's error."""
    return await stalling(
        stream.read(READ_SIZE),
        stall_timeout,
        moved_counter(stream),
        "no data came for {timeout:g} s",
    )


async def _stop(*tasks: asyncio.Future[None] | None) -> None:
    """Cancel the helper tasks still running and wait for them to end."""
    for task in tasks:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _verify_pieces(
    queue: asyncio.Queue[_Item],
    free: asyncio.Queue[bytearray],
    verifier: Verifier,
    writer: AtomicWriter,
    buffers: list[bytearray],
    progress: ProgressCallback,
    size: int,
) -> None:
    """Verify the gathered pieces as they come and write their plaintext
    (the two ``buffers`` alternate), until the end of the stream; raise
    what the reader hands over. However it ends, the write of verified
    plaintext under way lands first (not cancelled): a receipt that stops
    keeps every verified byte for a resume, and never an unverified one."""
    loop = asyncio.get_running_loop()
    write: asyncio.Future[None] | None = None
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            piece = memoryview(buf)[:n]
            need = verifier.opener.output_bound(n)
            if len(buffers[0]) < need:  # pragma: no cover - see bound
                buffers[0] = bytearray(need)  # new, never resized while lent
            if n < _INLINE:
                out = verifier.feed(piece, buffers[0])
            else:
                out = await loop.run_in_executor(None, verifier.feed, piece, buffers[0])
            # The opener copied what it holds back (a partial chunk): the
            # piece's buffer can take the stream's next bytes.
            free.put_nowait(buf)
            if write is not None:
                await write
            # The hash and the write (one worker thread) overlap the next
            # piece's verification; pieces are hashed and written in order.
            write = (
                asyncio.ensure_future(writer.write(out, digest=verifier.digest))
                if out
                else None
            )
            buffers.reverse()
            progress(verifier.plain, size)
        if write is not None:
            await write
            write = None
    except BaseException:
        await _landed(write)
        raise


async def _landed(write: asyncio.Future[None] | None) -> None:
    """Let the write of verified plaintext under way finish (not cancel
    it): a receipt that stops keeps every verified byte for a resume. Its
    own failure is not the one to report (the writer then records only
    what was written)."""
    if write is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(write)


def _hash_file(path: Path, size: int, digest: hashlib._Hash) -> None:
    """Feed the regular file ``path`` to ``digest``, through one descriptor
    that was checked to hold ``size`` bytes (blocking).

    Raises:
        IntegrityError: it is not a regular file of that size (changed since,
            or not the file any more).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        raise IntegrityError from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise IntegrityError
        hash_prefix(fd, size, digest)
    finally:
        os.close(fd)


async def receive_sealed(
    stream: ByteStream,
    key: bytes,
    offer: TransferOffer,
    dest: str | os.PathLike[str],
    *,
    sealed_size: int,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
    executor: Executor | None = None,
    partial: Partial | None = None,
    keep: Callable[[BaseException | None], bool] | None = None,
    stall_timeout: float | None = None,
    on_stored: Callable[[bytes], object] | None = None,
    digest: DigestWait | None = None,
) -> bytes:
    """Verify ``stream`` against ``offer`` and write its plaintext to ``dest``;
    return the SHA-256 of the file stored (prefix included).

    With ``partial`` (see :mod:`xfer.aio.partial`), the temporary file is
    that record's: a receipt that already has ``partial.state.verified``
    bytes continues after them (the stream then holds only the rest of the
    file, sealed on its own: ``sealed_size`` is its size), and on failure
    ``keep(exc)`` decides whether the verified prefix stays for a later
    resume. A stream that brings nothing for ``stall_timeout`` seconds fails.

    For a version 2 offer, ``digest`` waits for the sender's digest once the
    final chunk verified; the file goes into place only if the plaintext's
    SHA-256 and size equal it. (A version 1 offer carries its SHA-256.)

    ``on_stored`` is called with the file's SHA-256 once the verified file
    is in place, also when the call ends with a cancellation that came
    during the final rename.

    ``progress`` counts plaintext bytes against the offer's size. Reading,
    verifying and writing overlap: a reader task gathers the stream into
    pieces (at most a few queued), each is verified on a worker thread
    while the previous one is being written. The pieces are a ring of
    buffers allocated once (and the plaintext two more): memory does not
    grow with the file, and a buffer is reused only once the opener is
    done with it (it keeps a partial chunk in its own buffer).

    Raises:
        IntegrityError, EnvelopeFormatError: the stream is not the one the
            offer announced (tampered, truncated, too long, wrong hash, no
            digest in time), or the kept prefix is not a file made here or
            changed while it was continued (see
            :class:`~xfer.aio.files.AtomicWriter`).
        StreamTruncated: the stream ended early (a resumable break).
        TransportError: the stream failed or stalled. DestinationExists, OSError.
    In every case nothing is left at ``dest``.
    """
    start = partial.state.verified if partial is not None else 0
    verifier = Verifier(key, offer, sealed_size, executor, start)
    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUED)
    free: asyncio.Queue[bytearray] = asyncio.Queue()
    for _ in range(QUEUED + 2):
        free.put_nowait(bytearray(GATHER))
    reader: asyncio.Future[None] | None = None
    # Plaintext: two buffers alternate (one is written while the next piece
    # is verified into the other); a piece's plaintext is at most the piece
    # and the partial chunk the opener held back.
    bound = GATHER + offer.chunk_size + TAG_SIZE
    buffers = [bytearray(bound), bytearray(bound)]
    writer = AtomicWriter(dest, overwrite=overwrite, partial=partial, keep=keep)
    sha256 = b""
    try:
        async with writer:
            # The prefix as read through the descriptor that appends the rest
            # (the writer checks before the rename that it did not change).
            verifier.digest = writer.prefix_digest()
            reader = asyncio.ensure_future(_gather(stream, free, queue, stall_timeout))
            await _verify_pieces(
                queue, free, verifier, writer, buffers, progress, offer.size
            )
            tail = verifier.finish()
            if tail:
                await writer.write(tail)
            sha256 = await _checked(verifier, offer, digest)
            await writer.commit()
    finally:
        await _stop(reader)
        if writer.committed and on_stored is not None:
            on_stored(sha256)  # even when cancelled as the file went into place
    progress(verifier.plain, offer.size)
    return sha256
