"""One chunk of a sealed stream: its tag, and sealing and opening it.

Chunk ``i`` is sealed as (spec section 4)::

    C_i = AES-256-CTR(enc_key, counter = nonce || i * ceil(chunk_size / 16), P_i)
    T_i = HMAC(mac_key, header || uint64(i) || uint8(final) || C_i)[:32]

:func:`seal_chunk` and :func:`open_chunk` handle one chunk on its own (for
resuming, for parallel work, and for the final chunk of a stream). The two
run functions below are the hot path of the streaming contexts in
:mod:`xfer.envelope.chunker`: each seals or opens a run of full chunks with
one CTR context, without intermediate copies.
"""

from __future__ import annotations

import struct
from hmac import compare_digest
from typing import TYPE_CHECKING

from xfer.envelope.format import MAX_CHUNKS, TAG_SIZE, BytesLike
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


def _tag(keys: ChunkKeys, index: int, final: bool, ciphertext: BytesLike) -> bytes:
    mac = keys.mac_prefix.copy()
    mac.update(_CHUNK_META.pack(index, final))
    mac.update(ciphertext)
    return mac.finalize()[:TAG_SIZE]


def seal_chunk(
    keys: ChunkKeys, index: int, plaintext: BytesLike, *, final: bool
) -> bytes:
    """Seal one chunk on its own: ``ciphertext || tag``.

    For resuming or parallel work; a :class:`~xfer.envelope.chunker.Sealer`
    is the streaming form.

    Raises:
        LocalProtocolError: the plaintext's size does not fit the chunk's kind
            (a full chunk holds exactly ``chunk_size`` bytes, a final one less).
    """
    size = len(memoryview(plaintext))
    _check_chunk_shape(keys, index, size, final=final)
    ciphertext = keys.cipher_at(index).update(plaintext)
    return ciphertext + _tag(keys, index, final, ciphertext)


def open_chunk(keys: ChunkKeys, index: int, sealed: BytesLike, *, final: bool) -> bytes:
    """Verify and decrypt one chunk on its own.

    Raises:
        IntegrityError: the tag does not verify (or the chunk is too short).
    """
    view = memoryview(sealed)
    size = len(view) - TAG_SIZE
    if size < 0 or size > keys.chunk_size or (size == keys.chunk_size) == final:
        raise IntegrityError
    if not 0 <= index < MAX_CHUNKS:
        raise IntegrityError
    ciphertext, tag = view[:size], view[size:]
    if not compare_digest(_tag(keys, index, final, ciphertext), tag):
        raise IntegrityError
    return keys.cipher_at(index).update(ciphertext)


def _check_chunk_shape(keys: ChunkKeys, index: int, size: int, *, final: bool) -> None:
    if final and size >= keys.chunk_size:
        msg = f"a final chunk holds fewer than {keys.chunk_size} bytes, not {size}"
        raise LocalProtocolError(msg)
    if not final and size != keys.chunk_size:
        msg = f"a full chunk holds exactly {keys.chunk_size} bytes, not {size}"
        raise LocalProtocolError(msg)
    if not 0 <= index < MAX_CHUNKS:
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
