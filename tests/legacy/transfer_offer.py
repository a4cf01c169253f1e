# A frozen copy of xfer/transfer/offer.py as it was at commit
# 665f97d002962b848f12d853ae66e452bca8513a, the last before streams (issue 16):
# what an older xfer peer runs. Do not edit it; tests load it with
# tests.helpers.old_module. Its imports resolve to today's modules.
"""xfer's use of the OTR extra symmetric key: the TLV 8 offer, digest and
verdict (spec/otr.md §5).

Inside OTR, the sender of a file sends one TLV 8 whose 4-byte use value is
:data:`XFER_USE` (the ASCII bytes ``xfer``) and whose use-specific data is a
:class:`TransferOffer`: which transfer the key is for, the envelope's salt
and parameters, and the file's private metadata. The servers see none of it.
Both sides take the extra symmetric key of that very data message as the
envelope's input key material.

A version 2 offer names the file by a :func:`file_id` that costs no read of
the whole file; the SHA-256 of the plaintext, computed while sealing, follows
the sealed stream as a :class:`TransferDigest`. A version 1 offer carried the
SHA-256 up front (still accepted from older senders). The receiver answers
with a :class:`TransferVerdict`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

from xfer.envelope import EnvelopeHeader
from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FILE_ID_SAMPLE",
    "OFFER_VERSION",
    "XFER_USE",
    "TransferDigest",
    "TransferOffer",
    "TransferVerdict",
    "decode_payload",
    "envelope_header",
    "file_id",
]

#: The TLV 8 use value of xfer: the ASCII bytes "xfer".
XFER_USE = 0x78666572
#: The offer version we send: 2 (a file id up front, the digest after the
#: data). Version 1 (the SHA-256 up front) is still read.
OFFER_VERSION = 2
OFFER_VERSIONS = (1, 2)
#: The version of the verdict and of the digest payloads.
PAYLOAD_VERSION = 1
KIND_OFFER = 1
KIND_VERDICT = 2
KIND_DIGEST = 3
MAX_NAME_BYTES = 1024
#: A verdict's reason text, at most (UTF-8 bytes).
MAX_REASON_BYTES = 512
#: The flags a version 2 offer may set: none defined yet.
KNOWN_FLAGS = 0x00

#: Version 1: version, kind, transfer id, salt, suite, chunk size, size,
#: SHA-256, mtime.
_FIXED_V1 = struct.Struct(">BB16s32sBIQ32sQ")
#: Version 2: version, kind, flags, transfer id, salt, suite, chunk size,
#: size, file id, mtime.
_FIXED_V2 = struct.Struct(">BBB16s32sBIQ32sQ")
_VERDICT = struct.Struct(">BB16sB32sQ")
_DIGEST = struct.Struct(">BB16s32sQ")
#: Bytes of the start and of the end of a file that its id covers.
FILE_ID_SAMPLE = 64 * 1024
_FILE_ID_LABEL = b"xfer file id 1\x00"
#: RFC 6838 section 4.2: ``type "/" subtype``, each a restricted name (a
#: letter or digit, then up to 126 of these characters). Nothing else, so a
#: media type can never carry a control character, a space or an escape.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


def file_id(size: int, mtime_ns: int, head: bytes, tail: bytes) -> bytes:
    """The id a version 2 offer names a file by (spec/otr.md §5.1): SHA-256
    over a fixed label, the size and the modification time in nanoseconds
    (8 bytes each, big-endian) and the file's first and last
    :data:`FILE_ID_SAMPLE` bytes (``head``, ``tail``; they overlap in a
    small file). The same for an unchanged file at every offer, so that the
    receiver finds what it kept of an earlier try; it proves nothing (the
    digest after the data does)."""
    if len(head) != min(size, FILE_ID_SAMPLE) or len(tail) != len(head):
        raise LocalProtocolError("a file id covers the first and last 64 KiB")
    digest = hashlib.sha256(_FILE_ID_LABEL)
    digest.update(struct.pack(">QQ", size, mtime_ns & (2**64 - 1)))
    digest.update(head)
    digest.update(tail)
    return digest.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferOffer:
    """The private half of a file offer, carried in TLV 8.

    Exactly one of ``file_id`` (version 2, what xfer sends: the SHA-256
    comes after the data, in a :class:`TransferDigest`) and ``sha256``
    (version 1: the SHA-256 of the whole plaintext, up front) is given.
    """

    transfer_id: bytes
    salt: bytes
    suite: int
    chunk_size: int
    size: int
    name: str
    media_type: str = "application/octet-stream"
    mtime: int = 0
    #: Version 2: the sender's id of the file (:func:`file_id`).
    file_id: bytes | None = None
    #: Version 1: the SHA-256 of the whole plaintext.
    sha256: bytes | None = None
    #: Version 2: no flag is defined yet, so this is 0.
    flags: int = 0

    def __post_init__(self) -> None:
        if (self.file_id is None) == (self.sha256 is None):
            raise LocalProtocolError("an offer has a file id or a hash, not both")
        if (
            len(self.transfer_id) != 16
            or len(self.salt) != 32
            or len(self.identity) != 32
        ):
            raise LocalProtocolError(
                "transfer id, salt, file id or hash has the wrong size"
            )
        if self.flags & ~KNOWN_FLAGS or (self.flags and self.version == 1):
            raise LocalProtocolError("unknown offer flags")
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

    @property
    def version(self) -> int:
        """1 (the SHA-256 up front) or 2 (a file id; the digest follows)."""
        return 1 if self.sha256 is not None else 2

    @property
    def identity(self) -> bytes:
        """What finds an earlier, unfinished receipt of the same file: the
        file id (version 2) or the SHA-256 (version 1). Nothing is trusted
        because of it: the whole file's SHA-256 is checked at the end."""
        found = self.file_id if self.file_id is not None else self.sha256
        assert found is not None
        return found

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        media = self.media_type.encode("ascii")
        if self.sha256 is not None:
            fixed = _FIXED_V1.pack(
                1,
                KIND_OFFER,
                self.transfer_id,
                self.salt,
                self.suite,
                self.chunk_size,
                self.size,
                self.sha256,
                self.mtime,
            )
        else:
            fixed = _FIXED_V2.pack(
                2,
                KIND_OFFER,
                self.flags,
                self.transfer_id,
                self.salt,
                self.suite,
                self.chunk_size,
                self.size,
                self.identity,
                self.mtime,
            )
        return fixed + len(name).to_bytes(2, "big") + name + bytes([len(media)]) + media

    @classmethod
    def decode(cls, data: bytes) -> TransferOffer:
        """Raises RemoteProtocolError for anything but a well-formed offer
        (version 1 or 2)."""
        if len(data) < 2 or data[0] not in OFFER_VERSIONS or data[1] != KIND_OFFER:
            raise RemoteProtocolError("unknown transfer offer version or kind")
        fixed = _FIXED_V1 if data[0] == 1 else _FIXED_V2
        if len(data) < fixed.size + 3:
            raise RemoteProtocolError("transfer offer is truncated")
        flags = 0
        if data[0] == 1:
            _, _, tid, salt, suite, chunk, size, digest, mtime = fixed.unpack_from(data)
            ids = {"sha256": digest}
        else:
            _, _, flags, tid, salt, suite, chunk, size, ident, mtime = (
                fixed.unpack_from(data)
            )
            ids = {"file_id": ident}
            if flags & ~KNOWN_FLAGS:
                raise RemoteProtocolError("transfer offer has unknown flags")
        pos = fixed.size
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
                name=name_raw.decode("utf-8"),
                media_type=media_raw.decode("ascii"),
                mtime=mtime,
                flags=flags,
                **ids,
            )
        except (UnicodeDecodeError, LocalProtocolError) as exc:
            raise RemoteProtocolError(f"invalid transfer offer: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferDigest:
    """The sender's SHA-256 of the whole plaintext of a version 2 offer
    (spec/otr.md §5.3), prefix included on a resume, and the size it
    hashed: computed while sealing, sent inside OTR after the last byte of
    the sealed stream. The receiver stores the file only if its own hash
    and size agree."""

    transfer_id: bytes
    sha256: bytes
    size: int

    def __post_init__(self) -> None:
        if len(self.transfer_id) != 16 or len(self.sha256) != 32:
            raise LocalProtocolError("transfer id or hash has the wrong size")
        if not 0 <= self.size < 2**64:
            raise LocalProtocolError("size out of range")

    def encode(self) -> bytes:
        return _DIGEST.pack(
            PAYLOAD_VERSION, KIND_DIGEST, self.transfer_id, self.sha256, self.size
        )

    @classmethod
    def decode(cls, data: bytes) -> TransferDigest:
        """Raises RemoteProtocolError for anything but a well-formed digest."""
        if len(data) != _DIGEST.size:
            raise RemoteProtocolError("transfer digest has the wrong length")
        version, kind, tid, digest, size = _DIGEST.unpack(data)
        if version != PAYLOAD_VERSION or kind != KIND_DIGEST:
            raise RemoteProtocolError("unknown transfer digest version or kind")
        return cls(transfer_id=tid, sha256=digest, size=size)


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
                PAYLOAD_VERSION,
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
        if version != PAYLOAD_VERSION or kind != KIND_VERDICT:
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


def decode_payload(data: bytes) -> TransferOffer | TransferVerdict | TransferDigest:
    """The use-specific data of an xfer TLV 8: an offer, a verdict or a
    digest, told apart by its second byte (the kind).

    Raises:
        RemoteProtocolError: none of them, well-formed.
    """
    kind = data[1] if len(data) >= 2 else None
    if kind == KIND_VERDICT:
        return TransferVerdict.decode(data)
    if kind == KIND_DIGEST:
        return TransferDigest.decode(data)
    if kind == KIND_OFFER:
        return TransferOffer.decode(data)
    raise RemoteProtocolError("unknown transfer payload kind")
