"""xfer's use of the OTR extra symmetric key: the TLV 8 offer (spec/otr.md §5).

Inside OTR, the sender of a file sends one TLV 8 whose 4-byte use value is
:data:`XFER_USE` (the ASCII bytes ``xfer``) and whose use-specific data is a
:class:`TransferOffer`: which transfer the key is for, the envelope's salt
and parameters, and the file's private metadata. The servers see none of it.
Both sides take the extra symmetric key of that very data message as the
envelope's input key material.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["OFFER_VERSION", "XFER_USE", "TransferOffer"]

#: The TLV 8 use value of xfer: the ASCII bytes "xfer".
XFER_USE = 0x78666572
OFFER_VERSION = 1
KIND_OFFER = 1
MAX_NAME_BYTES = 1024

_FIXED = struct.Struct(">BB16s32sBIQ32sQ")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferOffer:
    """The private half of a file offer, carried in TLV 8."""

    transfer_id: bytes
    salt: bytes
    suite: int
    chunk_size: int
    size: int
    sha256: bytes
    name: str
    media_type: str = "application/octet-stream"
    mtime: int = 0

    def __post_init__(self) -> None:
        if (
            len(self.transfer_id) != 16
            or len(self.salt) != 32
            or len(self.sha256) != 32
        ):
            raise LocalProtocolError("transfer id, salt or hash has the wrong size")
        if not 0 <= self.size < 2**64 or not 0 <= self.mtime < 2**64:
            raise LocalProtocolError("size or time out of range")
        if not 0 < self.chunk_size < 2**32 or not 0 <= self.suite < 256:
            raise LocalProtocolError("suite or chunk size out of range")
        raw = self.name.encode("utf-8")
        if not 0 < len(raw) <= MAX_NAME_BYTES or "\x00" in self.name:
            raise LocalProtocolError("a file name is 1 to 1024 UTF-8 bytes without NUL")
        if len(self.media_type) > 255 or not self.media_type.isascii():
            raise LocalProtocolError("a media type is at most 255 ASCII characters")

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        media = self.media_type.encode("ascii")
        return (
            _FIXED.pack(
                OFFER_VERSION,
                KIND_OFFER,
                self.transfer_id,
                self.salt,
                self.suite,
                self.chunk_size,
                self.size,
                self.sha256,
                self.mtime,
            )
            + len(name).to_bytes(2, "big")
            + name
            + bytes([len(media)])
            + media
        )

    @classmethod
    def decode(cls, data: bytes) -> TransferOffer:
        """Raises RemoteProtocolError for anything but a well-formed offer."""
        if len(data) < _FIXED.size + 3:
            raise RemoteProtocolError(
                "transfer offer is truncated", hint="security-error"
            )
        version, kind, tid, salt, suite, chunk, size, digest, mtime = (
            _FIXED.unpack_from(data)
        )
        if version != OFFER_VERSION or kind != KIND_OFFER:
            raise RemoteProtocolError("unknown transfer offer version or kind")
        pos = _FIXED.size
        name_len = int.from_bytes(data[pos : pos + 2], "big")
        name_raw = data[pos + 2 : pos + 2 + name_len]
        pos += 2 + name_len
        if len(name_raw) != name_len or pos >= len(data):
            raise RemoteProtocolError("transfer offer is truncated")
        media_len = data[pos]
        media_raw = data[pos + 1 : pos + 1 + media_len]
        if len(media_raw) != media_len or pos + 1 + media_len != len(data):
            raise RemoteProtocolError("transfer offer has the wrong length")
        try:
            return cls(
                transfer_id=tid,
                salt=salt,
                suite=suite,
                chunk_size=chunk,
                size=size,
                sha256=digest,
                name=name_raw.decode("utf-8"),
                media_type=media_raw.decode("ascii"),
                mtime=mtime,
            )
        except (UnicodeDecodeError, LocalProtocolError) as exc:
            raise RemoteProtocolError(f"invalid transfer offer: {exc}") from exc
