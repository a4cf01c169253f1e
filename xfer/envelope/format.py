"""Wire constants and the envelope header: pack and parse, no cryptography.

The normative description is ``spec/envelope.md``; section numbers below refer
to it. A sealed stream is::

    header (58 bytes) || chunk_0 || chunk_1 || ... || chunk_n

In format version 1 every chunk is ``ciphertext || tag`` with a 32-byte tag.
All chunks but the last carry exactly ``chunk_size`` bytes of plaintext; the
last (the *final* chunk) carries from 0 to ``chunk_size - 1`` bytes. A stream
whose plaintext is an exact multiple of ``chunk_size`` therefore ends with an
empty final chunk, which makes the end of the stream self-evident: a reader
never needs to look ahead to know whether a full chunk is the last one.

Format version 2 (spec section 2.4) puts a 4-byte *chunk word* in front of
every chunk: the final flag in its top bit and the chunk's plaintext length in
the rest. That lets a sealer flush a short chunk in the middle of a stream
(live data), and still tells a reader where each chunk ends, and whether it is
the last, before any MAC work.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from xfer.errors import (
    EnvelopeFormatError,
    LocalProtocolError,
    UnsupportedSuite,
    UnsupportedVersion,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FINAL_BIT",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "TRANSFER_ID_SIZE",
    "VERSION",
    "VERSIONS",
    "WORD_SIZE",
    "BytesLike",
    "EnvelopeHeader",
    "Suite",
    "parse_word",
]

#: What the contexts accept as input and write into.
BytesLike = bytes | bytearray | memoryview

#: The first four bytes of every sealed stream (spec section 2.1).
MAGIC = b"XFER"
#: The format version a sealer writes unless told otherwise: version 1, what
#: every file transfer seals.
VERSION = 1
#: The format versions this build writes and reads (spec sections 2.3, 2.4).
VERSIONS = (1, 2)
#: Size of the chunk word in front of every version 2 chunk.
WORD_SIZE = 4
#: The chunk word's top bit: set on the final chunk of a version 2 stream.
FINAL_BIT = 1 << 31
#: Size of the input key material: the OTR extra symmetric key is 32 bytes.
KEY_SIZE = 32
#: Size of the per-transfer random salt.
SALT_SIZE = 32
#: Size of the transfer id.
TRANSFER_ID_SIZE = 16
#: Every chunk tag is the first 32 bytes of the suite's HMAC output.
TAG_SIZE = 32

#: 64 KiB: large enough that per-chunk overhead (one tag, a Python call) is
#: below 0.1 %, small enough to fit a 65535-byte IBB block with room to spare
#: once IBB frames it.
DEFAULT_CHUNK_SIZE = 64 * 1024
#: Bounds on the plaintext size of a full chunk. The lower bound keeps the tag
#: overhead under 3 %; the upper bound caps the memory an opener commits to a
#: header it has not authenticated yet. 64511 (CryptoCat's IBB-sized chunk)
#: lies well inside.
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
#: At most 2**32 chunks per stream, so that the CTR counter of the last block
#: (chunk index times blocks per chunk, below 2**32 * 2**20) never carries into
#: the 8-byte nonce half of the counter block.
MAX_CHUNKS = 2**32

_HEADER = struct.Struct(">4sBBI32s16s")
#: Size in bytes of the packed header.
HEADER_SIZE = _HEADER.size
assert HEADER_SIZE == 58


class Suite(enum.IntEnum):
    """Cipher suites, by the one-byte id written in the header."""

    AES256_CTR_HMAC_SHA512 = 1
    AES256_CTR_HMAC_SHA256 = 2

    @property
    def label(self) -> str:
        """The suite's name as used in specs and on the command line."""
        return _SUITE_LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> Suite:
        """The suite with the given name.

        Raises:
            LocalProtocolError: no suite has that name.
        """
        for suite, name in _SUITE_LABELS.items():
            if name == label:
                return suite
        msg = f"unknown suite {label!r}; known: {', '.join(_SUITE_LABELS.values())}"
        raise LocalProtocolError(msg)


_SUITE_LABELS = {
    Suite.AES256_CTR_HMAC_SHA512: "aes256-ctr-hmac-sha512",
    Suite.AES256_CTR_HMAC_SHA256: "aes256-ctr-hmac-sha256",
}


def check_chunk_size(chunk_size: int) -> None:
    """Raise LocalProtocolError if a chunk size is out of bounds."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        msg = (
            f"chunk size {chunk_size} is out of bounds "
            f"[{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"
        )
        raise LocalProtocolError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeHeader:
    """The parsed header of a sealed stream (spec section 2.1).

    The header is not secret, and it is not authenticated on its own: every
    chunk tag covers it, so a changed header fails the first chunk.
    """

    suite: Suite
    chunk_size: int
    salt: bytes
    transfer_id: bytes
    version: int = VERSION

    def __post_init__(self) -> None:
        try:  # accept the plain id too, but always hold the enum
            object.__setattr__(self, "suite", Suite(self.suite))
        except ValueError:
            msg = f"unknown suite {self.suite!r}"
            raise LocalProtocolError(msg) from None
        if self.version not in VERSIONS:
            msg = f"cannot build a header of version {self.version}"
            raise LocalProtocolError(msg)
        check_chunk_size(self.chunk_size)
        if len(self.salt) != SALT_SIZE:
            msg = f"salt must be {SALT_SIZE} bytes, not {len(self.salt)}"
            raise LocalProtocolError(msg)
        if len(self.transfer_id) != TRANSFER_ID_SIZE:
            msg = (
                f"transfer id must be {TRANSFER_ID_SIZE} bytes, "
                f"not {len(self.transfer_id)}"
            )
            raise LocalProtocolError(msg)

    def pack(self) -> bytes:
        """The header's 58 wire bytes."""
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.suite,
            self.chunk_size,
            self.salt,
            self.transfer_id,
        )

    @classmethod
    def parse(
        cls, data: bytes, *, max_chunk_size: int = MAX_CHUNK_SIZE
    ) -> EnvelopeHeader:
        """Parse exactly :data:`HEADER_SIZE` bytes.

        Args:
            data: the first 58 bytes of a sealed stream.
            max_chunk_size: refuse headers announcing larger chunks (an opener
                buffers one chunk, so this bounds its memory).

        Raises:
            EnvelopeFormatError: wrong size, wrong magic, or a chunk size out
                of bounds.
            UnsupportedVersion: a version not in :data:`VERSIONS`.
            UnsupportedSuite: a suite id this build does not know.
        """
        if len(data) != HEADER_SIZE:
            msg = f"envelope header must be {HEADER_SIZE} bytes, got {len(data)}"
            raise EnvelopeFormatError(msg)
        magic, version, suite_id, chunk_size, salt, transfer_id = _HEADER.unpack(data)
        if magic != MAGIC:
            msg = "not an xfer envelope (bad magic bytes)"
            raise EnvelopeFormatError(msg)
        if version not in VERSIONS:
            msg = (
                f"unsupported envelope version {version} "
                f"(this build reads {', '.join(map(str, VERSIONS))})"
            )
            raise UnsupportedVersion(msg)
        try:
            suite = Suite(suite_id)
        except ValueError:
            msg = f"unsupported cipher suite id {suite_id}"
            raise UnsupportedSuite(msg) from None
        if not MIN_CHUNK_SIZE <= chunk_size <= min(max_chunk_size, MAX_CHUNK_SIZE):
            msg = (
                f"chunk size {chunk_size} is out of bounds "
                f"[{MIN_CHUNK_SIZE}, {min(max_chunk_size, MAX_CHUNK_SIZE)}]"
            )
            raise EnvelopeFormatError(msg)
        return cls(
            suite=suite,
            chunk_size=chunk_size,
            salt=salt,
            transfer_id=transfer_id,
            version=version,
        )

    @property
    def chunk_overhead(self) -> int:
        """Wire bytes of a chunk beyond its plaintext: the tag, and in
        version 2 the chunk word."""
        return TAG_SIZE if self.version == 1 else WORD_SIZE + TAG_SIZE

    @property
    def wire_chunk_size(self) -> int:
        """Bytes on the wire of one full chunk: (word,) ciphertext and tag."""
        return self.chunk_size + self.chunk_overhead

    def sealed_size(self, plaintext_size: int) -> int:
        """Total sealed size, header included, of a plaintext of this size.

        In version 2 this is the size when no chunk was flushed; every flush
        adds one chunk's overhead.
        """
        if plaintext_size < 0:
            msg = "plaintext size cannot be negative"
            raise LocalProtocolError(msg)
        chunks = plaintext_size // self.chunk_size + 1
        return HEADER_SIZE + plaintext_size + chunks * self.chunk_overhead


def parse_word(word: int, chunk_size: int) -> tuple[int, bool]:
    """A version 2 chunk word: (plaintext length, final flag).

    Raises:
        EnvelopeFormatError: the length is above ``chunk_size``, or zero on a
            chunk that is not final (spec section 2.4); both are known from
            the word alone, before any MAC work.
    """
    final = word >= FINAL_BIT
    size = word & (FINAL_BIT - 1)
    if size > chunk_size:
        msg = f"a chunk of {size} bytes is longer than the chunk size {chunk_size}"
        raise EnvelopeFormatError(msg)
    if size == 0 and not final:
        msg = "an empty chunk that is not the final one"
        raise EnvelopeFormatError(msg)
    return size, final
