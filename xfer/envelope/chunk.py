"""One chunk of a sealed stream: its tag, and sealing and opening it.

Chunk ``i`` is sealed as (spec section 4)::

    C_i = AES-256-CTR(enc_key, counter = nonce || i * ceil(chunk_size / 16), P_i)
    T_i = HMAC(mac_key, header || uint64(i) || uint8(final) || W_i || C_i)[:32]

where the chunk word ``W_i`` (4 bytes: the final flag in the top bit, the
plaintext length below) exists in format version 2 only and is empty in
version 1. On the wire a chunk is ``W_i || C_i || T_i``: the tag covers every
byte in front of it, as one contiguous slice.

:func:`seal_chunk` and :func:`open_chunk` handle one chunk on its own (for
resuming, for parallel work, for flushed chunks and for the final chunk of a
stream). The run functions below are the hot path of the streaming contexts
in :mod:`xfer.envelope.chunker`: each seals or opens a run of full chunks with
one CTR context, without intermediate copies; version 1 and version 2 have a
pair each, so that neither pays for the other's framing.
"""

from __future__ import annotations

import struct
from hmac import compare_digest
from typing import TYPE_CHECKING

from xfer.envelope.format import (
    FINAL_BIT,
    MAX_CHUNKS,
    TAG_SIZE,
    WORD_SIZE,
    BytesLike,
    parse_word,
)
from xfer.errors import IntegrityError, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from cryptography.hazmat.primitives.ciphers import CipherContext

    from xfer.envelope.keys import ChunkKeys

    #: The signature of the two hot-path run functions.
    _RunFn: TypeAlias = Callable[
        [ChunkKeys, CipherContext, int, memoryview, memoryview, int], None
    ]

__all__ = ["open_chunk", "seal_chunk"]

_CHUNK_META = struct.Struct(">QB")
_WORD = struct.Struct(">I")


def _tag(keys: ChunkKeys, index: int, final: bool, body: BytesLike) -> bytes:
    """The tag over ``body``: the chunk's wire bytes in front of its tag."""
    mac = keys.mac_prefix.copy()
    mac.update(_CHUNK_META.pack(index, final))
    mac.update(body)
    return mac.finalize()[:TAG_SIZE]


def seal_chunk(
    keys: ChunkKeys, index: int, plaintext: BytesLike, *, final: bool
) -> bytes:
    """Seal one chunk on its own: its wire bytes, ``(W_i ||) C_i || T_i``.

    For resuming, parallel work and flushing; a
    :class:`~xfer.envelope.chunker.Sealer` is the streaming form.

    Raises:
        LocalProtocolError: the plaintext's size does not fit the chunk's kind
            (version 1: a full chunk holds exactly ``chunk_size`` bytes, a
            final one less; version 2: a chunk that is not final 1 to
            ``chunk_size`` bytes, a final one 0 to ``chunk_size``), or the
            index is out of range (a chunk that is not final is never the
            2**32nd: the last index is kept for the final chunk).
    """
    size = len(memoryview(plaintext))
    _check_chunk_shape(keys, index, size, final=final)
    ciphertext = keys.cipher_at(index).update(plaintext)
    if keys.version == 1:
        return ciphertext + _tag(keys, index, final, ciphertext)
    body = _WORD.pack(size | (FINAL_BIT if final else 0)) + ciphertext
    return body + _tag(keys, index, final, body)


def open_chunk(keys: ChunkKeys, index: int, sealed: BytesLike, *, final: bool) -> bytes:
    """Verify and decrypt one chunk on its own (its wire bytes exactly).

    Raises:
        EnvelopeFormatError: version 2, and the chunk word announces more
            than ``chunk_size`` bytes or an empty chunk that is not final.
        IntegrityError: the tag does not verify, the chunk's length does not
            fit its kind, or (version 2) its word says otherwise than
            ``final`` or than its length.
    """
    view = memoryview(sealed).cast("B")
    if keys.version == 1:
        size = len(view) - TAG_SIZE
        if size < 0 or size > keys.chunk_size or (size == keys.chunk_size) == final:
            raise IntegrityError
        body = view[:size]
    else:
        if len(view) < WORD_SIZE + TAG_SIZE:
            raise IntegrityError
        size, word_final = parse_word(_WORD.unpack_from(view)[0], keys.chunk_size)
        if word_final != final or len(view) != WORD_SIZE + size + TAG_SIZE:
            raise IntegrityError
        body = view[: WORD_SIZE + size]
    out = bytearray(size)
    _open_one(keys, index, final, body, view[len(body) :], memoryview(out))
    return bytes(out)


def _open_one(
    keys: ChunkKeys,
    index: int,
    final: bool,
    body: memoryview,
    tag: memoryview,
    dst: memoryview,
) -> None:
    """Check one chunk's tag over ``body``, then decrypt its ciphertext (the
    last ``len(dst)`` bytes of ``body``) into ``dst``."""
    if not 0 <= index < (MAX_CHUNKS if final else MAX_CHUNKS - 1):
        raise IntegrityError
    if not compare_digest(_tag(keys, index, final, body), tag):
        raise IntegrityError
    keys.cipher_at(index).update_into(body[len(body) - len(dst) :], dst)


def _check_chunk_shape(keys: ChunkKeys, index: int, size: int, *, final: bool) -> None:
    if keys.version == 1:
        if final and size >= keys.chunk_size:
            msg = f"a final chunk holds fewer than {keys.chunk_size} bytes, not {size}"
            raise LocalProtocolError(msg)
        if not final and size != keys.chunk_size:
            msg = f"a full chunk holds exactly {keys.chunk_size} bytes, not {size}"
            raise LocalProtocolError(msg)
    elif size > keys.chunk_size or (size == 0 and not final):
        kind = "final" if final else "non-final"
        least = 0 if final else 1
        msg = f"a {kind} chunk holds {least} to {keys.chunk_size} bytes, not {size}"
        raise LocalProtocolError(msg)
    if not 0 <= index < (MAX_CHUNKS if final else MAX_CHUNKS - 1):
        msg = f"chunk index {index} is out of range"
        raise LocalProtocolError(msg)


# The two run functions below are the hot path. Each processes ``count`` full
# chunks with one CTR context (positioned at chunk ``index``), reading from
# ``src`` and writing to ``dst`` without intermediate copies.


def _seal_run(
    keys: ChunkKeys,
    cipher: CipherContext,
    index: int,
    src: memoryview,
    dst: memoryview,
    count: int,
) -> None:
    size = keys.chunk_size
    gap = bytes(keys.keystream_gap)
    prefix = keys.mac_prefix.copy()
    pack = _CHUNK_META.pack
    for k in range(count):
        s = k * size
        d = s + k * TAG_SIZE
        ciphertext = dst[d : d + size]
        cipher.update_into(src[s : s + size], ciphertext)
        if gap:
            cipher.update(gap)
        mac = prefix.copy()
        mac.update(pack(index + k, False))
        mac.update(ciphertext)
        dst[d + size : d + size + TAG_SIZE] = mac.finalize()[:TAG_SIZE]


def _open_run(
    keys: ChunkKeys,
    cipher: CipherContext,
    index: int,
    src: memoryview,
    dst: memoryview,
    count: int,
) -> None:
    size = keys.chunk_size
    gap = bytes(keys.keystream_gap)
    prefix = keys.mac_prefix.copy()
    pack = _CHUNK_META.pack
    for k in range(count):
        d = k * size
        s = d + k * TAG_SIZE
        ciphertext = src[s : s + size]
        mac = prefix.copy()
        mac.update(pack(index + k, False))
        mac.update(ciphertext)
        if not compare_digest(
            mac.finalize()[:TAG_SIZE], src[s + size : s + size + TAG_SIZE]
        ):
            raise IntegrityError
        cipher.update_into(ciphertext, dst[d : d + size])
        if gap:
            cipher.update(gap)


# Version 2: every full chunk is ``W || C || T`` with ``W = uint32(chunk_size)``
# (not final); the tag covers ``W || C`` as one slice.


def _seal_run_framed(
    keys: ChunkKeys,
    cipher: CipherContext,
    index: int,
    src: memoryview,
    dst: memoryview,
    count: int,
) -> None:
    size = keys.chunk_size
    stride = WORD_SIZE + size + TAG_SIZE
    word = _WORD.pack(size)
    gap = bytes(keys.keystream_gap)
    prefix = keys.mac_prefix.copy()
    pack = _CHUNK_META.pack
    for k in range(count):
        s = k * size
        d = k * stride
        dst[d : d + WORD_SIZE] = word
        cipher.update_into(src[s : s + size], dst[d + WORD_SIZE : d + WORD_SIZE + size])
        if gap:
            cipher.update(gap)
        mac = prefix.copy()
        mac.update(pack(index + k, False))
        mac.update(dst[d : d + WORD_SIZE + size])
        dst[d + WORD_SIZE + size : d + stride] = mac.finalize()[:TAG_SIZE]


def _open_run_framed(
    keys: ChunkKeys,
    cipher: CipherContext,
    index: int,
    src: memoryview,
    dst: memoryview,
    count: int,
) -> None:
    """Open ``count`` full chunks that are not final. The caller has read
    their words already; each is checked again here, as bytes, for free."""
    size = keys.chunk_size
    stride = WORD_SIZE + size + TAG_SIZE
    word = _WORD.pack(size)
    gap = bytes(keys.keystream_gap)
    prefix = keys.mac_prefix.copy()
    pack = _CHUNK_META.pack
    for k in range(count):
        d = k * size
        s = k * stride
        if src[s : s + WORD_SIZE] != word:
            raise IntegrityError
        mac = prefix.copy()
        mac.update(pack(index + k, False))
        mac.update(src[s : s + WORD_SIZE + size])
        if not compare_digest(
            mac.finalize()[:TAG_SIZE], src[s + WORD_SIZE + size : s + stride]
        ):
            raise IntegrityError
        cipher.update_into(src[s + WORD_SIZE : s + WORD_SIZE + size], dst[d : d + size])
        if gap:
            cipher.update(gap)
