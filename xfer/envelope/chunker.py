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
    T_i = HMAC(mac_key, header || uint64(i) || uint8(final) || W_i || C_i)[:32]

Encrypt-then-MAC: the opener checks ``T_i`` in constant time *before* it
decrypts ``C_i``, so no plaintext of an unauthenticated chunk ever leaves it.
The tag binds the header (and through it the version, salt and transfer id),
the position and the final flag, which is what detects reordering,
duplication, dropping, truncation and splicing from another stream.

Format version 1 (the default, and what file transfers seal) has no chunk
word ``W_i``: every full chunk carries exactly ``chunk_size`` plaintext bytes
and is never final; the final chunk is shorter (possibly empty). An opener
knows a chunk is complete and not final as soon as it holds ``chunk_size +
32`` bytes of it, and knows which bytes form the final chunk only in
``finalize()``, when the stream has ended.

Format version 2 is for live data. Each chunk starts with a 4-byte word (the
final flag and the plaintext length), so :meth:`Sealer.flush` can seal what
is buffered as a short chunk in the middle of the stream. The opener reads
each word first, releases every chunk as soon as all of it arrived and
verified (the final one included, which sets :attr:`Opener.finished`), and
fails on any byte after the final chunk.

In both versions a stream that ends without a verified final chunk fails
``finalize()``. The cutting of streams into chunks and the thread fan-out
live in :mod:`xfer.envelope.stream`.
"""

from __future__ import annotations

import os
from hmac import compare_digest
from typing import TYPE_CHECKING

from xfer.envelope.chunk import (
    _open_run,
    _seal_run,
    _seal_run_framed,
    open_chunk,
    seal_chunk,
)
from xfer.envelope.format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    SALT_SIZE,
    TAG_SIZE,
    TRANSFER_ID_SIZE,
    VERSION,
    BytesLike,
    EnvelopeHeader,
    Suite,
)
from xfer.envelope.keys import ChunkKeys, derive_keys
from xfer.envelope.stream import _ChunkStream
from xfer.errors import IntegrityError, LocalProtocolError

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from xfer.envelope.chunk import _RunFn

__all__ = ["DEFAULT_SUITE", "Opener", "Sealer", "open_chunk", "seal_chunk"]

#: The suite a Sealer uses unless told otherwise.
DEFAULT_SUITE = Suite.AES256_CTR_HMAC_SHA512


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
        version: the format version: 1 (the default; what file transfers
            seal) or 2, whose chunks carry their length so that
            :meth:`flush` can seal a short chunk mid-stream (live data).

    The salt is drawn from ``os.urandom`` here, so a given key material and
    salt never seal twice; tests and vectors use the deterministic seam in
    :mod:`xfer.envelope._parts` instead.

    Raises:
        LocalProtocolError: bad key size, transfer id size, chunk size or
            version.
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
        version: int = VERSION,
    ) -> None:
        header = EnvelopeHeader(
            suite=suite,
            chunk_size=chunk_size,
            salt=os.urandom(SALT_SIZE),
            transfer_id=(
                os.urandom(TRANSFER_ID_SIZE) if transfer_id is None else transfer_id
            ),
            version=version,
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
        version: int = VERSION,
    ) -> Sealer:
        """A sealer for a salt that was announced before sealing began.

        xfer's OTR offer (``spec/otr.md`` section 5) carries the salt, and the
        key material only exists once the offer is queued, so the transfer
        draws the salt itself (``os.urandom(32)``, never reused) and seals
        under it here. Everyone else should let :class:`Sealer` draw it.
        """
        header = EnvelopeHeader(
            suite=suite,
            chunk_size=chunk_size,
            salt=salt,
            transfer_id=transfer_id,
            version=version,
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
        self._run_fn: _RunFn = _seal_run if keys.version == 1 else _seal_run_framed

    @property
    def header(self) -> EnvelopeHeader:
        """The header this sealer writes (its salt, transfer id, suite...)."""
        return self._keys.header

    @property
    def buffered(self) -> int:
        """Plaintext bytes waiting for a chunk: fewer than ``chunk_size``."""
        return len(self._pending)

    def _bound(self, n: int) -> int:
        total = len(self._pending) + n
        head = 0 if self._header_sent else HEADER_SIZE
        return head + (total // self._keys.chunk_size) * self.header.wire_chunk_size

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
        wire = self.header.wire_chunk_size
        try:
            return written + self._feed(data, dst, written, size, wire, self._run_fn)
        except BaseException:
            self._done = True
            raise

    def flush(self) -> bytes:
        """Seal what is buffered now, as one short chunk that is not final.

        Format version 2 only: for live data, a sender calls this when its
        flush interval expires, so that a partly filled chunk does not wait
        for more input. Returns the chunk's wire bytes (after the header if
        nothing was returned before), or ``b""`` when nothing is buffered.

        Raises:
            AlreadyFinalized: after ``finalize``.
            LocalProtocolError: the sealer writes format version 1, whose
                chunks cannot be short mid-stream; or the stream has no chunk
                index left but the final chunk's (2**32 - 1), which
                ``finalize`` can still use.
        """
        self._check_open()
        if self._keys.version == 1:
            msg = "flush needs envelope format version 2; this sealer writes 1"
            raise LocalProtocolError(msg)
        if not self._pending:
            return b""
        chunk = seal_chunk(self._keys, self._index, self._pending, final=False)
        self._index += 1
        self._cipher = None  # the next run starts at a new chunk index
        self._pending.clear()
        if self._header_sent:
            return chunk
        self._header_sent = True
        return self._keys.header_bytes + chunk

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
    """Verify and decrypt a sealed stream of either format version.

    Plaintext is released chunk by chunk, each only after its tag verified.
    The stream is known to be complete and authentic only when
    :meth:`finalize` returns: a caller writing plaintext somewhere must treat
    it as provisional until then (see :mod:`xfer.aio.files`).

    The version comes from the header. In version 1 ``update`` releases full
    chunks and ``finalize`` the final one; in version 2 ``update`` releases
    every chunk, short and final ones included, as soon as all of it has
    arrived and verified (:attr:`finished` turns true with the final one),
    and ``finalize`` returns ``b""`` or raises. A caller that needs one
    version checks :attr:`header` (a transfer compares it with its offer).

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
        self._released = 0

    @property
    def header(self) -> EnvelopeHeader | None:
        """The stream's header once its first 58 bytes have arrived."""
        return None if self._keys is None else self._keys.header

    @property
    def released(self) -> int:
        """Plaintext bytes released so far, every one of them verified."""
        return self._released

    @property
    def finished(self) -> bool:
        """Whether the final chunk has verified: the plaintext is complete.

        Version 2 sets it in the ``update`` that completes the final chunk,
        version 1 in ``finalize``.
        """
        return self._finished

    def _bound(self, n: int) -> int:
        return len(self._pending) + n

    def output_bound(self, n: int) -> int:
        """An upper bound on what ``update`` of ``n`` more bytes returns."""
        return self._bound(n)

    def update(self, data: BytesLike) -> bytes:
        """Take more of the stream; return plaintext of the chunks it completed.

        Raises:
            AlreadyFinalized: after ``finalize`` or after an earlier error.
            EnvelopeFormatError: the header is malformed or unsupported, or
                (version 2) a chunk word announces more than ``chunk_size``
                bytes or an empty chunk that is not final.
            IntegrityError: a chunk failed to verify, or (version 2) a byte
                came after the final chunk.
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
            if self._keys.version == 1:
                n = self._feed(src, dst, 0, size + TAG_SIZE, size, _open_run)
            else:
                n = self._feed_framed(src, dst)
        except BaseException:
            self._done = True
            raise
        self._released += n
        return n

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
        """End the stream: verify the final chunk and return its plaintext
        (version 1), or check that it came (version 2: ``b""``).

        Raises:
            AlreadyFinalized: called twice, or after an earlier error.
            EnvelopeFormatError: the stream ended inside the header.
            IntegrityError: no final chunk (the stream was cut), or it failed
                to verify.
        """
        self._check_open()
        self._done = True
        if self._keys is None:
            EnvelopeHeader.parse(bytes(self._head))  # raises: the header is short
        assert self._keys is not None
        if self._keys.version != 1:
            if not self._finished:
                raise IntegrityError
            return b""
        if self._index >= MAX_CHUNKS:
            raise IntegrityError
        plaintext = open_chunk(self._keys, self._index, self._pending, final=True)
        self._pending.clear()
        self._finished = True
        self._released += len(plaintext)
        return plaintext
