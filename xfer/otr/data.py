"""OTR v3 data types (Protocol-v3, "Data Types") and a bounds-checked reader.

========  ===================================================================
BYTE      1 byte unsigned
SHORT     2 bytes unsigned, big-endian
INT       4 bytes unsigned, big-endian
MPI       INT length, then the big-endian magnitude in *minimal* form (no
          leading zero bytes; zero has length 0)
DATA      INT length, then that many raw bytes (leading zeros kept)
CTR       8 bytes: the top half of an AES-CTR counter block
MAC       20 bytes, no length
PUBKEY    SHORT type (0x0000 = DSA), then MPI p, q, g, y
SIG       r || s, each left-padded to the length of q (20 bytes for DSA)
========  ===================================================================

Parsers raise :class:`~xfer.errors.RemoteProtocolError` and nothing else on
any input: what they read comes from the peer. Writers raise
:class:`~xfer.errors.LocalProtocolError` for values that cannot be encoded.
"""

from __future__ import annotations

from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_DATA",
    "Reader",
    "encode_byte",
    "encode_data",
    "encode_int",
    "encode_mpi",
    "encode_short",
    "int_to_min_bytes",
]

#: No OTR field we accept is larger than this (the longest is an SMP TLV's
#: MPI of 192 bytes, or a whole data message's ciphertext); it bounds what a
#: hostile length field can make a parser slice.
MAX_DATA = 1 << 20


def encode_byte(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"BYTE out of range: {value}")
    return bytes([value])


def encode_short(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"SHORT out of range: {value}")
    return value.to_bytes(2, "big")


def encode_int(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"INT out of range: {value}")
    return value.to_bytes(4, "big")


def int_to_min_bytes(value: int) -> bytes:
    """The minimal big-endian bytes of a non-negative integer (b'' for 0)."""
    if value < 0:
        raise LocalProtocolError("MPI cannot be negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def encode_mpi(value: int) -> bytes:
    raw = int_to_min_bytes(value)
    return encode_int(len(raw)) + raw


def encode_data(value: bytes) -> bytes:
    return encode_int(len(value)) + value


class Reader:
    """Reads OTR fields from a byte string, front to back.

    Every method raises RemoteProtocolError if the input is too short or a
    length field is out of bounds. :meth:`end` checks nothing is left over.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise RemoteProtocolError("OTR message is truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def data(self, max_bytes: int = MAX_DATA) -> bytes:
        """A DATA field of at most ``max_bytes`` bytes."""
        n = self.u32()
        if n > min(max_bytes, MAX_DATA):
            raise RemoteProtocolError("OTR DATA field is too long")
        return self.take(n)

    def mpi(self, max_bytes: int = MAX_DATA) -> int:
        """An MPI whose encoding has at most ``max_bytes`` bytes.

        Leading zero bytes are tolerated on input (libotr too), but they count
        toward ``max_bytes``: the bound is on what the peer sent, checked
        before the bytes become an integer, so an oversized value costs no
        arithmetic at all.
        """
        n = self.u32()
        if n > min(max_bytes, MAX_DATA):
            raise RemoteProtocolError("OTR MPI is too long")
        return int.from_bytes(self.take(n), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining())

    def end(self) -> None:
        if self.remaining():
            raise RemoteProtocolError("OTR message has trailing bytes")
