"""The streaming encrypted envelope: AES-256-CTR + HMAC, chunk by chunk.

Sans-I/O: this package imports only ``cryptography`` and the standard library.
The wire format is specified in ``spec/envelope.md``.

    >>> from xfer.envelope import Sealer, Opener
    >>> key = bytes(32)
    >>> sealer = Sealer(key)
    >>> sealed = sealer.update(b"hello") + sealer.finalize()
    >>> opener = Opener(key)
    >>> opener.update(sealed) + opener.finalize()
    b'hello'

Format version 2 adds flushed short chunks for live data:

    >>> sealer = Sealer(key, version=2)
    >>> first = sealer.update(b"tail -f ") + sealer.flush()
    >>> opener = Opener(key)
    >>> opener.update(first)  # released at once, verified
    b'tail -f '
    >>> opener.update(sealer.update(b"says hi") + sealer.finalize()), opener.finished
    (b'says hi', True)
"""

from __future__ import annotations

from xfer.envelope.chunker import DEFAULT_SUITE, Opener, Sealer, open_chunk, seal_chunk
from xfer.envelope.format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    TRANSFER_ID_SIZE,
    VERSIONS,
    EnvelopeHeader,
    Suite,
)
from xfer.envelope.keys import ChunkKeys, derive_keys

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SUITE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "TAG_SIZE",
    "TRANSFER_ID_SIZE",
    "VERSIONS",
    "ChunkKeys",
    "EnvelopeHeader",
    "Opener",
    "Sealer",
    "Suite",
    "derive_keys",
    "open_chunk",
    "seal_chunk",
]
