"""What Sealer and Opener share: cutting a byte stream into chunks, and
processing runs of full chunks, on threads when worthwhile.

Both framings of ``spec/envelope.md`` are cut here. Version 1 (section 2.3)
has a fixed stride: every ``chunk_size`` bytes of plaintext, or every
``chunk_size + 32`` bytes of a sealed stream, is one full chunk, so
:meth:`_ChunkStream._feed` serves both directions. Version 2 (section 2.4)
prefixes each chunk with a word that gives its length and final flag; a
sealer still cuts plaintext at a fixed stride (a flush is a separate call),
but an opener reads the words: :meth:`_ChunkStream._feed_framed` opens runs
of full chunks as version 1 does and each short or final chunk on its own.

Because chunk ``i``'s counter depends on ``i`` alone, runs of chunks can be
sealed or opened independently. With an executor, a run splits into small
tasks that ``workers`` threads drain (``cryptography`` releases the GIL for
inputs of 2 KiB and more); the output stays in order, and memory is bounded
by the call's own input.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from xfer.envelope.chunk import _open_one, _open_run_framed
from xfer.envelope.format import (
    MAX_CHUNKS,
    TAG_SIZE,
    WORD_SIZE,
    BytesLike,
    parse_word,
)
from xfer.errors import AlreadyFinalized, IntegrityError, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from cryptography.hazmat.primitives.ciphers import CipherContext

    from xfer.envelope.chunk import _RunFn
    from xfer.envelope.keys import ChunkKeys

__all__: list[str] = []

#: Below this many chunks per worker, threads cost more than they save.
_MIN_CHUNKS_PER_WORKER = 2
#: The work one thread claims at a time in a parallel update.
_TASK_BYTES = 512 * 1024


class _ChunkStream:
    """What Sealer and Opener share: the chunk counter, the pending partial
    chunk, the sequential CTR context, the thread fan-out and finalisation."""

    _keys: ChunkKeys | None

    def __init__(self, executor: Executor | None, workers: int) -> None:
        if workers < 1:
            msg = "workers must be at least 1"
            raise LocalProtocolError(msg)
        self._executor = executor
        self._workers = workers if executor is not None else 1
        self._index = 0
        self._pending = bytearray()
        # Positioned at chunk ``_index`` after a run of full chunks; None
        # whenever a chunk was handled on its own (a flushed, short or final
        # one), so that the next run repositions it.
        self._cipher: CipherContext | None = None
        self._done = False
        self._finished = False  # the final chunk is through

    def _check_open(self) -> None:
        if self._done:
            msg = "this context is finished; create a new one"
            raise AlreadyFinalized(msg)

    def _run(
        self,
        fn: _RunFn,
        src: memoryview,
        src_stride: int,
        dst: memoryview,
        dst_stride: int,
        count: int,
    ) -> None:
        """Process ``count`` full chunks, on threads when worthwhile."""
        keys = self._keys
        assert keys is not None
        if self._index + count > MAX_CHUNKS - 1:  # the last index is the final's
            self._fail_too_long()
        workers = min(self._workers, count // _MIN_CHUNKS_PER_WORKER)
        if workers <= 1:
            if self._cipher is None:
                self._cipher = keys.cipher_at(self._index)
            fn(keys, self._cipher, self._index, src, dst, count)
        else:
            assert self._executor is not None
            self._cipher = None  # repositioned lazily after the fan-out
            self._fan_out(fn, src, src_stride, dst, dst_stride, count, workers)
        self._index += count

    def _fan_out(
        self,
        fn: _RunFn,
        src: memoryview,
        src_stride: int,
        dst: memoryview,
        dst_stride: int,
        count: int,
        workers: int,
    ) -> None:
        """Process ``count`` chunks as small tasks drained by ``workers`` threads.

        The calling thread drains too. Tasks are small (about 512 KiB), so a
        thread that gets less CPU (a busy core) simply takes fewer of them,
        and the join at the end waits for one task at most.
        """
        keys = self._keys
        assert keys is not None
        assert self._executor is not None
        per_task = max(_MIN_CHUNKS_PER_WORKER, _TASK_BYTES // keys.chunk_size)
        first = self._index
        tasks = [(k, min(per_task, count - k)) for k in range(0, count, per_task)]
        claim = itertools.count()  # next() on it is atomic under the GIL
        failed: list[BaseException] = []

        def drain() -> None:
            while not failed and (i := next(claim)) < len(tasks):
                off, n = tasks[i]
                try:
                    fn(
                        keys,
                        keys.cipher_at(first + off),
                        first + off,
                        src[off * src_stride : (off + n) * src_stride],
                        dst[off * dst_stride : (off + n) * dst_stride],
                        n,
                    )
                except BaseException as exc:
                    failed.append(exc)

        futures = [self._executor.submit(drain) for _ in range(workers - 1)]
        drain()
        for future in futures:
            future.result()
        if failed:
            raise failed[0]

    def _fail_too_long(self) -> None:
        raise LocalProtocolError("stream exceeds the maximum number of chunks")

    def _feed(
        self,
        data: BytesLike,
        buf: BytesLike,
        out_start: int,
        in_chunk: int,
        out_chunk: int,
        fn: _RunFn,
    ) -> int:
        """Process every complete chunk in pending + data; keep the rest pending.

        Returns the number of bytes written to ``buf`` from ``out_start`` on.
        """
        src = memoryview(data).cast("B")
        dst = memoryview(buf).cast("B")
        written = out_start
        pending = self._pending
        if pending:
            take = min(in_chunk - len(pending), len(src))
            pending += src[:take]
            src = src[take:]
            if len(pending) < in_chunk:
                return written - out_start
            self._run(fn, memoryview(pending), in_chunk, dst[written:], out_chunk, 1)
            written += out_chunk
            pending.clear()
        count = len(src) // in_chunk
        if count:
            self._run(
                fn, src[: count * in_chunk], in_chunk, dst[written:], out_chunk, count
            )
            written += count * out_chunk
        pending += src[count * in_chunk :]
        return written - out_start

    def _feed_framed(self, data: BytesLike, buf: BytesLike) -> int:
        """Open every complete version 2 chunk in pending + data; keep the
        rest pending. Returns the number of plaintext bytes written to ``buf``.

        Each chunk word is read before anything else is done with its chunk,
        so a length above the chunk size (or an empty chunk that is not final)
        fails before any MAC work and before anything is buffered: pending
        never holds more than one chunk, ``4 + chunk_size + 32`` bytes. Runs
        of full chunks that are not final are opened in place (on threads if
        worthwhile); any other chunk is opened on its own as soon as all of it
        is here. A byte after the final chunk fails at once.
        """
        keys = self._keys
        assert keys is not None
        size = keys.chunk_size
        stride = WORD_SIZE + size + TAG_SIZE
        src = memoryview(data).cast("B")
        dst = memoryview(buf).cast("B")
        written = 0
        pending = self._pending
        while True:
            if self._finished:
                if src:
                    raise IntegrityError  # bytes after the final chunk
                return written
            if pending:  # finish the chunk an earlier call began
                take = max(0, WORD_SIZE - len(pending))
                pending += src[:take]
                src = src[take:]
                total = self._chunk_total(pending, len(pending) + len(src))
                take = 0 if total is None else total - len(pending)
                pending += src[:take]
                src = src[take:]
                if total is None or len(pending) < total:
                    return written
                written += self._open_single(memoryview(pending), dst[written:])
                pending.clear()
                continue
            count = self._full_chunks(src)
            if count:
                run = src[: count * stride]
                self._run(_open_run_framed, run, stride, dst[written:], size, count)
                written += count * size
                src = src[count * stride :]
                continue
            total = self._chunk_total(src, len(src))
            if total is None or len(src) < total:
                pending += src
                return written
            written += self._open_single(src[:total], dst[written:])
            src = src[total:]

    def _full_chunks(self, src: memoryview) -> int:
        """How many whole full chunks that are not final ``src`` begins with:
        those whose word is exactly ``chunk_size``."""
        keys = self._keys
        assert keys is not None
        stride = WORD_SIZE + keys.chunk_size + TAG_SIZE
        full = keys.chunk_size.to_bytes(WORD_SIZE, "big")
        count = 0
        while (count + 1) * stride <= len(src) and (
            src[count * stride : count * stride + WORD_SIZE] == full
        ):
            count += 1
        return count

    def _chunk_total(self, head: BytesLike, available: int) -> int | None:
        """The wire size of the version 2 chunk that ``head`` begins, from its
        word; None while the word is incomplete.

        Raises:
            EnvelopeFormatError: a bad word (:func:`parse_word`).
            IntegrityError: a final chunk followed by more of the
                ``available`` bytes.
        """
        view = memoryview(head)
        if len(view) < WORD_SIZE:
            return None
        assert self._keys is not None
        word = int.from_bytes(view[:WORD_SIZE], "big")
        n, final = parse_word(word, self._keys.chunk_size)
        total = WORD_SIZE + n + TAG_SIZE
        if final and available > total:
            raise IntegrityError  # bytes after the final chunk
        return total

    def _open_single(self, chunk: memoryview, dst: memoryview) -> int:
        """Open one whole version 2 chunk (its word read already) into
        ``dst``; return its plaintext length."""
        keys = self._keys
        assert keys is not None
        word = int.from_bytes(chunk[:WORD_SIZE], "big")
        n, final = parse_word(word, keys.chunk_size)
        if n == keys.chunk_size and not final:  # a full chunk, split across calls
            self._run(_open_run_framed, chunk, len(chunk), dst, n, 1)
            return n
        body = WORD_SIZE + n
        _open_one(keys, self._index, final, chunk[:body], chunk[body:], dst[:n])
        self._index += 1
        self._cipher = None
        self._finished = final
        return n

    def _update_via_into(
        self, data: BytesLike, update_into: Callable[[BytesLike, bytearray], int]
    ) -> bytes:
        buf = bytearray(self._bound(len(memoryview(data))))
        n = update_into(data, buf)
        return bytes(memoryview(buf)[:n])

    def _bound(self, n: int) -> int:
        raise NotImplementedError
