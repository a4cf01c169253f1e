"""xfer's use of the OTR extra symmetric key: the TLV 8 offer and verdict
(spec/otr.md §5).

Inside OTR, the sender of a file sends one TLV 8 whose 4-byte use value is
:data:`XFER_USE` (the ASCII bytes ``xfer``) and whose use-specific data is a
:class:`TransferOffer`: which transfer the key is for, the envelope's salt
and parameters, and the file's private metadata. The servers see none of it.
Both sides take the extra symmetric key of that very data message as the
envelope's input key material.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from xfer.envelope import EnvelopeHeader
from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "OFFER_VERSION",
    "XFER_USE",
    "TransferOffer",
    "TransferVerdict",
    "decode_payload",
    "envelope_header",
]

#: The TLV 8 use value of xfer: the ASCII bytes "xfer".
XFER_USE = 0x78666572
OFFER_VERSION = 1
KIND_OFFER = 1
KIND_VERDICT = 2
MAX_NAME_BYTES = 1024
#: A verdict's reason text, at most (UTF-8 bytes).
MAX_REASON_BYTES = 512

_FIXED = struct.Struct(">BB16s32sBIQ32sQ")
_VERDICT = struct.Struct(">BB16sB32sQ")
#: RFC 6838 section 4.2: ``type "/" subtype``, each a restricted name (a
#: letter or digit, then up to 126 of these characters). Nothing else, so a
#: media type can never carry a control character, a space or an escape.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


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
        if len(self.media_type) > 255 or not (
            self.media_type == "" or _MEDIA_TYPE.fullmatch(self.media_type)
        ):
            raise LocalProtocolError(
                "a media type is type/subtype in RFC 6838 characters, at most 255"
            )

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
            raise RemoteProtocolError("transfer offer is truncated")
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


#: What a receiver says of a transfer: it stored the file, or refused it.
STORED = 0
REFUSED = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferVerdict:
    """The receiver's last word on one offer, carried in TLV 8 like the offer
    (spec/otr.md §5.2): inside OTR, so only the peer whose fingerprint the
    offer went to can say it. A Jingle ``success`` is only a hint."""

    transfer_id: bytes
    stored: bool
    #: The SHA-256 of the whole file as the receiver stored it (zero bytes
    #: when refused) and its size.
    sha256: bytes = bytes(32)
    size: int = 0
    #: Why it was refused (for the sender's user; never shown to servers).
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.transfer_id) != 16 or len(self.sha256) != 32:
            raise LocalProtocolError("transfer id or hash has the wrong size")
        if not 0 <= self.size < 2**64:
            raise LocalProtocolError("size out of range")
        if len(self.reason.encode("utf-8")) > MAX_REASON_BYTES:
            raise LocalProtocolError("a verdict's reason is at most 512 UTF-8 bytes")

    def encode(self) -> bytes:
        reason = self.reason.encode("utf-8")
        return (
            _VERDICT.pack(
                OFFER_VERSION,
                KIND_VERDICT,
                self.transfer_id,
                STORED if self.stored else REFUSED,
                self.sha256,
                self.size,
            )
            + len(reason).to_bytes(2, "big")
            + reason
        )

    @classmethod
    def decode(cls, data: bytes) -> TransferVerdict:
        """Raises RemoteProtocolError for anything but a well-formed verdict."""
        if len(data) < _VERDICT.size + 2:
            raise RemoteProtocolError("transfer verdict is truncated")
        version, kind, tid, status, digest, size = _VERDICT.unpack_from(data)
        if version != OFFER_VERSION or kind != KIND_VERDICT:
            raise RemoteProtocolError("unknown transfer verdict version or kind")
        if status not in (STORED, REFUSED):
            raise RemoteProtocolError("unknown transfer verdict status")
        pos = _VERDICT.size
        reason_len = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + reason_len != len(data):
            raise RemoteProtocolError("transfer verdict has the wrong length")
        try:
            return cls(
                transfer_id=tid,
                stored=status == STORED,
                sha256=digest,
                size=size,
                reason=data[pos + 2 :].decode("utf-8"),
            )
        except (UnicodeDecodeError, LocalProtocolError) as exc:
            raise RemoteProtocolError(f"invalid transfer verdict: {exc}") from exc


def envelope_header(offer: TransferOffer) -> EnvelopeHeader:
    """The envelope header that a stream sealed for ``offer`` carries: its
    suite, chunk size, salt and transfer id.

    Raises:
        LocalProtocolError: the offer names a suite the envelope does not
            know, or a chunk size out of its range.
    """
    return EnvelopeHeader(
        suite=offer.suite,  # type: ignore[arg-type]  # (checked: an int is taken)
        chunk_size=offer.chunk_size,
        salt=offer.salt,
        transfer_id=offer.transfer_id,
    )


def decode_payload(data: bytes) -> TransferOffer | TransferVerdict:
    """The use-specific data of an xfer TLV 8: an offer or a verdict.

    Raises:
        RemoteProtocolError: neither, well-formed.
    """
    if len(data) >= 2 and data[0] == OFFER_VERSION and data[1] == KIND_VERDICT:
        return TransferVerdict.decode(data)
    return TransferOffer.decode(data)
