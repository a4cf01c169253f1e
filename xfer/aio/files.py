"""Files in and out of the envelope: with :mod:`xfer.aio.atomic`, the only file
I/O of xfer.

Two promises, whatever happens (a bad tag, a full disk, a cancelled task):

* **No unverified plaintext reaches a destination file.** Plaintext goes to a
  temporary file beside the destination (same directory, so the final rename
  is atomic), mode 0600: an :class:`~xfer.aio.atomic.AtomicWriter`. Only
  after :meth:`Opener.finalize` has verified the final chunk is the temporary
  file flushed, fsynced and renamed into place, and the directory fsynced. On
  any failure it is removed, and an existing destination is left untouched.
* **Memory is constant in the file size**: one read piece, one output buffer
  and at most one pending chunk are alive at a time.

A destination given as a file descriptor (standard output) cannot be written
atomically: it receives verified chunks as they come, and a failure is
reported only by the exception (the command line's exit code).

The CPU work of each piece runs in a worker thread, so the event loop stays
responsive while a file is sealed or opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from typing import TYPE_CHECKING

from xfer.aio.atomic import AtomicWriter, _opened, hash_prefix
from xfer.aio.bytestream import ProgressCallback, no_progress
from xfer.envelope import DEFAULT_CHUNK_SIZE, DEFAULT_SUITE, Opener, Sealer, Suite
from xfer.errors import XferError

if TYPE_CHECKING:
    import io
    from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
    from concurrent.futures import Executor

    from xfer.envelope import EnvelopeHeader

__all__ = [
    "READ_SIZE",
    "AtomicWriter",
    "ProgressCallback",
    "hash_prefix",
    "open_file",
    "open_stream_to_file",
    "read_chunks",
    "seal_file",
]

#: Bytes read from a file at a time: large enough to amortise the thread hop
#: per piece, small enough to keep memory flat.
READ_SIZE = 4 * 1024 * 1024

#: A source or destination: a path, or an open file descriptor (0 or 1 for
#: standard input and output).
Target = str | os.PathLike[str] | int


def _nothing() -> None:
    pass


async def _open_reader(source: Target) -> io.BufferedReader:
    """Open ``source`` for reading in a thread. Readers read in threads too
    but close the file synchronously (closing a file opened for reading
    does no I/O worth a thread), so no cancellation can skip the close."""
    if isinstance(source, int):
        return await _opened(lambda: open(source, "rb", closefd=False), _nothing)
    return await _opened(lambda: open(source, "rb"), _nothing)


async def read_chunks(
    source: Target,
    *,
    size: int = READ_SIZE,
    start: int = 0,
    into: bytearray | None = None,
) -> AsyncGenerator[bytes | memoryview, None]:
    """Yield the contents of a file (or file descriptor) in pieces of
    ``size``, from byte ``start`` on. A caller that may stop early closes it
    (``contextlib.aclosing``), so the file is closed at once.

    With ``into``, each piece is read into that buffer (``readinto``, up to
    its length; ``size`` is ignored) and yielded as a view of it, valid only
    until the next piece is requested: one buffer for the whole file, no
    allocation per piece."""
    reader = await _open_reader(source)
    try:
        if start:
            await asyncio.to_thread(reader.seek, start)
        if into is not None:
            view = memoryview(into)
            while n := await asyncio.to_thread(reader.readinto, into):
                yield view[:n]
            return
        while piece := await asyncio.to_thread(reader.read, size):
            yield piece
    finally:
        reader.close()


async def _pieces(source: Target) -> AsyncIterator[bytes | memoryview]:
    """Read ``source`` into one reused buffer; yield views of what was read
    (each valid only until the next one is requested)."""
    async with contextlib.aclosing(
        read_chunks(source, into=bytearray(READ_SIZE))
    ) as pieces:
        async for piece in pieces:
            yield piece


def _size_of(source: Target) -> int | None:
    try:
        st = os.fstat(source) if isinstance(source, int) else os.stat(source)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _FdWriter:
    """Writes straight to an open descriptor (standard output): not atomic."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def __aenter__(self) -> _FdWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = await asyncio.to_thread(os.write, self._fd, view)
            view = view[n:]

    async def commit(self) -> None:
        return None


def _writer_for(dest: Target, *, overwrite: bool) -> AtomicWriter | _FdWriter:
    if isinstance(dest, int):
        return _FdWriter(dest)
    return AtomicWriter(dest, overwrite=overwrite)


async def seal_file(
    key: bytes,
    source: Target,
    dest: Target,
    *,
    transfer_id: bytes | None = None,
    suite: Suite = DEFAULT_SUITE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    executor: Executor | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
) -> EnvelopeHeader:
    """Seal ``source`` into ``dest`` (written atomically unless it is a descriptor).

    Returns:
        the header of the sealed stream.

    Raises:
        DestinationExists: ``dest`` exists and ``overwrite`` is false.
        OSError: reading or writing failed (nothing is left at ``dest``).
    """
    sealer = Sealer(
        key,
        transfer_id=transfer_id,
        suite=suite,
        chunk_size=chunk_size,
        executor=executor,
        workers=workers,
    )
    total = _size_of(source)
    done = 0
    buf = bytearray(sealer.output_bound(READ_SIZE))
    async with _writer_for(dest, overwrite=overwrite) as writer:
        async for piece in _pieces(source):
            # The pending partial chunk can make a piece complete one more
            # chunk than the piece alone holds: size for this very call.
            need = sealer.output_bound(len(piece))
            if len(buf) < need:
                buf = bytearray(need)
            n = await asyncio.to_thread(sealer.update_into, piece, buf)
            await writer.write(memoryview(buf)[:n])
            done += len(piece)
            progress(done, total)
        await writer.write(sealer.finalize())
        await writer.commit()
    progress(done, done)
    return sealer.header


async def open_stream_to_file(
    key: bytes,
    stream: AsyncIterable[bytes | memoryview],
    dest: Target,
    *,
    transfer_id: bytes | None = None,
    executor: Executor | None = None,
    workers: int = 2,
    overwrite: bool = False,
    total: int | None = None,
    progress: ProgressCallback = no_progress,
) -> EnvelopeHeader:
    """Verify and decrypt a sealed stream into ``dest``.

    ``progress`` counts sealed bytes consumed, against ``total`` if given.

    Returns:
        the header of the opened stream, after everything verified.

    Raises:
        IntegrityError, EnvelopeFormatError: the stream is not authentic; no
            file is left at ``dest`` (an existing one is untouched).
        DestinationExists: ``dest`` exists and ``overwrite`` is false.
    """
    opener = Opener(key, transfer_id=transfer_id, executor=executor, workers=workers)
    buf = bytearray()
    done = 0
    async with _writer_for(dest, overwrite=overwrite) as writer:
        async for piece in stream:
            need = opener.output_bound(len(piece))
            if len(buf) < need:
                buf = bytearray(need)
            n = await asyncio.to_thread(opener.update_into, piece, buf)
            if n:
                await writer.write(memoryview(buf)[:n])
            done += len(piece)
            progress(done, total)
        await writer.write(opener.finalize())
        await writer.commit()
    header = opener.header
    if header is None:  # pragma: no cover - finalize() raised already
        raise XferError("stream ended before its header")
    progress(done, done)
    return header


async def open_file(
    key: bytes,
    source: Target,
    dest: Target,
    *,
    transfer_id: bytes | None = None,
    executor: Executor | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
) -> EnvelopeHeader:
    """Verify and decrypt the sealed file ``source`` into ``dest``.

    See :func:`open_stream_to_file` for the guarantees and errors.
    """
    return await open_stream_to_file(
        key,
        _pieces(source),
        dest,
        transfer_id=transfer_id,
        executor=executor,
        workers=workers,
        overwrite=overwrite,
        total=_size_of(source),
        progress=progress,
    )
