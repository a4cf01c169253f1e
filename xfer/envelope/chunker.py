"""Streaming seal and open contexts: AES-256-CTR, then HMAC over each chunk.

Theory of operation
-------------------
A :class:`Sealer` turns plaintext into a sealed stream and an :class:`Opener`
turns a sealed stream back into plaintext. Both follow the shape of
``cryptography``'s cipher contexts: ``update()`` as often as you like, with any
split of the input, then ``finalize()`` exactly once; any use after that raises
:class:`~xfer.errors.AlreadyFinalized`. ``update_into()`` writes into a buffer
the caller owns, which saves a copy on the hot path.

Chunk ``i`` is sealed as (spec section 4; :mod:`xfer.envelope.chunk` seals
and opens one chunk, or a run of full ones)::

    C_i = AES-256-CTR(enc_key, counter = nonce || i * ceil(chunk_size / 16), P_i)
    T_i = HMAC(mac_key, header || uint64(i) || uint8(final) || C_i)[:32]

Encrypt-then-MAC: the opener checks ``T_i`` in constant time *before* it
decrypts ``C_i``, so no plaintext of an unauthenticated chunk ever leaves it.
The tag binds the header (and through it the salt and transfer id), the
position and the final flag, which is what detects reordering, duplication,
dropping, truncation and splicing from another stream.

Every full chunk carries exactly ``chunk_size`` plaintext bytes and is never
final; the final chunk is shorter (possibly empty). An opener therefore knows
a chunk is complete and not final as soon as it holds ``chunk_size + 32``
bytes of it, and knows which bytes form the final chunk only in
``finalize()``, when the stream has ended. A stream that ends without a final
chunk, or whose final chunk fails, fails ``finalize()``.

Because chunk ``i``'s counter depends on ``i`` alone, runs of chunks can be
sealed or opened independently. With an ``executor``, each ``update`` call
splits its complete chunks into ``workers`` contiguous runs and processes them
on threads (``cryptography`` releases the GIL for inputs of 2 KiB and more);
the output stays in order, and memory is bounded by the call's own input.
"""

from __future__ import annotations

import itertools
import os
from hmac import compare_digest
from typing import TYPE_CHECKING

from xfer.envelope.chunk import _open_run, _seal_run, open_chunk, seal_chunk
from xfer.envelope.format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    SALT_SIZE,
    TAG_SIZE,
    TRANSFER_ID_SIZE,
    BytesLike,
    EnvelopeHeader,
    Suite,
)
from xfer.envelope.keys import ChunkKeys, derive_keys
from xfer.errors import AlreadyFinalized, IntegrityError, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from cryptography.hazmat.primitives.ciphers import CipherContext

    from xfer.envelope.chunk import _RunFn

__all__ = ["DEFAULT_SUITE", "Opener", "Sealer", "open_chunk", "seal_chunk"]

#: The suite a Sealer uses unless told otherwise.
DEFAULT_SUITE = Suite.AES256_CTR_HMAC_SHA512

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
        self._cipher: CipherContext | None = None
        self._done = False

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
        if self._index + count > MAX_CHUNKS:
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

    def _update_via_into(
        self, data: BytesLike, update_into: Callable[[BytesLike, bytearray], int]
    ) -> bytes:
        buf = bytearray(self._bound(len(memoryview(data))))
        n = update_into(data, buf)
        return bytes(memoryview(buf)[:n])

    def _bound(self, n: int) -> int:
        raise NotImplementedError


class Sealer(_ChunkStream):
    """Seal a plaintext stream under a fresh salt.

    Args:
        key: the 32-byte input key material.
        transfer_id: 16 bytes naming the transfer (bound into keys and tags);
            random when omitted.
        suite: the cipher suite.
        chunk_size: plaintext bytes per full chunk.
        executor: threads to seal runs of chunks in parallel; ``None`` seals
            on the calling thread.
        workers: how many runs to split each update into when an executor is
            given (the calling thread does one of them).

    The salt is drawn from ``os.urandom`` here, so a given key material and
    salt never seal twice; tests and vectors use the deterministic seam in
    :mod:`xfer.envelope._parts` instead.

    Raises:
        LocalProtocolError: bad key size, transfer id size or chunk size.
    """

    def __init__(
        self,
        key: bytes,
        *,
        transfer_id: bytes | None = None,
        suite: Suite = DEFAULT_SUITE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        executor: Executor | None = None,
        workers: int = 2,
    ) -> None:
        header = EnvelopeHeader(
            suite=suite,
            chunk_size=chunk_size,
            salt=os.urandom(SALT_SIZE),
            transfer_id=(
                os.urandom(TRANSFER_ID_SIZE) if transfer_id is None else transfer_id
            ),
        )
        self._setup(derive_keys(key, header), executor, workers)

    @classmethod
    def announced(
        cls,
        key: bytes,
        *,
        salt: bytes,
        transfer_id: bytes,
        suite: Suite = DEFAULT_SUITE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        executor: Executor | None = None,
        workers: int = 2,
    ) -> Sealer:
        """A sealer for a salt that was announced before sealing began.

        xfer's OTR offer (``spec/otr.md`` section 5) carries the salt, and the
        key material only exists once the offer is queued, so the transfer
        draws the salt itself (``os.urandom(32)``, never reused) and seals
        under it here. Everyone else should let :class:`Sealer` draw it.
        """
        header = EnvelopeHeader(
            suite=suite, chunk_size=chunk_size, salt=salt, transfer_id=transfer_id
        )
        return cls._from_keys(
            derive_keys(key, header), executor=executor, workers=workers
        )

    @classmethod
    def _from_keys(
        cls, keys: ChunkKeys, *, executor: Executor | None = None, workers: int = 2
    ) -> Sealer:
        sealer = cls.__new__(cls)
        sealer._setup(keys, executor, workers)
        return sealer

    def _setup(self, keys: ChunkKeys, executor: Executor | None, workers: int) -> None:
        super().__init__(executor, workers)
        self._keys: ChunkKeys = keys
        self._header_sent = False

    @property
    def header(self) -> EnvelopeHeader:
        """The header this sealer writes (its salt, transfer id, suite...)."""
        return self._keys.header

    def _bound(self, n: int) -> int:
        total = len(self._pending) + n
        head = 0 if self._header_sent else HEADER_SIZE
        size = self._keys.chunk_size
        return head + (total // size) * (size + TAG_SIZE)

    def output_bound(self, n: int) -> int:
        """Exactly how many bytes ``update`` of ``n`` more bytes returns."""
        return self._bound(n)

    def update(self, data: BytesLike) -> bytes:
        """Seal what is complete of ``data``; return the sealed bytes.

        The first output starts with the header.

        Raises:
            AlreadyFinalized: after ``finalize``.
        """
        self._check_open()
        return self._update_via_into(data, self.update_into)

    def update_into(self, data: BytesLike, buf: BytesLike) -> int:
        """Like :meth:`update`, but write into ``buf``; return the byte count.

        ``buf`` must hold at least ``output_bound(len(data))`` bytes.

        Raises:
            AlreadyFinalized: after ``finalize``.
            LocalProtocolError: ``buf`` is too small.
        """
        self._check_open()
        n = len(memoryview(data))
        need = self._bound(n)
        dst = memoryview(buf).cast("B")
        if len(dst) < need:
            msg = f"buffer of {len(dst)} bytes is too small; need {need}"
            raise LocalProtocolError(msg)
        written = 0
        if not self._header_sent:
            dst[:HEADER_SIZE] = self._keys.header_bytes
            self._header_sent = True
            written = HEADER_SIZE
        size = self._keys.chunk_size
        try:
            return written + self._feed(
                data, dst, written, size, size + TAG_SIZE, _seal_run
            )
        except BaseException:
            self._done = True
            raise

    def finalize(self) -> bytes:
        """Seal the final chunk (what is pending, possibly nothing).

        Raises:
            AlreadyFinalized: called twice.
        """
        self._check_open()
        self._done = True
        head = b"" if self._header_sent else self._keys.header_bytes
        if self._index >= MAX_CHUNKS:
            self._fail_too_long()
        final = seal_chunk(self._keys, self._index, self._pending, final=True)
        self._pending.clear()
        return head + final


class Opener(_ChunkStream):
    """Verify and decrypt a sealed stream.

    Plaintext is released chunk by chunk, each only after its tag verified.
    The stream is known to be complete and authentic only when
    :meth:`finalize` returns: a caller writing plaintext somewhere must treat
    it as provisional until then (see :mod:`xfer.aio.files`).

    Args:
        key: the 32-byte input key material.
        transfer_id: if given, the stream must carry this transfer id.
        max_chunk_size: refuse headers announcing larger chunks; bounds the
            memory an opener commits before anything is authenticated.
        executor, workers: as for :class:`Sealer`.

    Raises:
        LocalProtocolError: bad key size.
    """

    def __init__(
        self,
        key: bytes,
        *,
        transfer_id: bytes | None = None,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        executor: Executor | None = None,
        workers: int = 2,
    ) -> None:
        super().__init__(executor, workers)
        if len(key) != KEY_SIZE:  # checked now, not when the header arrives
            msg = f"key material must be {KEY_SIZE} bytes, not {len(key)}"
            raise LocalProtocolError(msg)
        self._key = key
        self._expected_id = transfer_id
        self._max_chunk_size = max_chunk_size
        self._keys = None
        self._head = bytearray()

    @property
    def header(self) -> EnvelopeHeader | None:
        """The stream's header once its first 58 bytes have arrived."""
        return None if self._keys is None else self._keys.header

    def _bound(self, n: int) -> int:
        return len(self._pending) + n

    def output_bound(self, n: int) -> int:
        """An upper bound on what ``update`` of ``n`` more bytes returns."""
        return self._bound(n)

    def update(self, data: BytesLike) -> bytes:
        """Take more of the stream; return plaintext of the chunks it completed.

        Raises:
            AlreadyFinalized: after ``finalize`` or after an earlier error.
            EnvelopeFormatError: the header is malformed or unsupported.
            IntegrityError: a chunk failed to verify.
        """
        self._check_open()
        return self._update_via_into(data, self.update_into)

    def update_into(self, data: BytesLike, buf: BytesLike) -> int:
        """Like :meth:`update`, but write into ``buf``; return the byte count.

        ``buf`` must hold at least ``output_bound(len(data))`` bytes.
        """
        self._check_open()
        src = memoryview(data).cast("B")
        dst = memoryview(buf).cast("B")
        if len(dst) < self._bound(len(src)):
            msg = (
                f"buffer of {len(dst)} bytes is too small; need {self._bound(len(src))}"
            )
            raise LocalProtocolError(msg)
        try:
            if self._keys is None:
                take = min(HEADER_SIZE - len(self._head), len(src))
                self._head += src[:take]
                src = src[take:]
                if len(self._head) < HEADER_SIZE:
                    return 0
                self._start(bytes(self._head))
            assert self._keys is not None
            size = self._keys.chunk_size
            return self._feed(src, dst, 0, size + TAG_SIZE, size, _open_run)
        except BaseException:
            self._done = True
            raise

    def _start(self, head: bytes) -> None:
        header = EnvelopeHeader.parse(head, max_chunk_size=self._max_chunk_size)
        if self._expected_id is not None and not compare_digest(
            header.transfer_id, self._expected_id
        ):
            raise IntegrityError
        self._keys = derive_keys(self._key, header)

    def _fail_too_long(self) -> None:
        raise IntegrityError

    def finalize(self) -> bytes:
        """Verify the final chunk; return its plaintext.

        Raises:
            AlreadyFinalized: called twice, or after an earlier error.
            EnvelopeFormatError: the stream ended inside the header.
            IntegrityError: no final chunk, or it failed to verify.
        """
        self._check_open()
        self._done = True
        if self._keys is None:
            EnvelopeHeader.parse(bytes(self._head))  # raises: the header is short
        assert self._keys is not None
        if self._index >= MAX_CHUNKS:
            raise IntegrityError
        plaintext = open_chunk(self._keys, self._index, self._pending, final=True)
        self._pending.clear()
        return plaintext
