"""OTR v3 messages: the text forms on the wire and the binary encoded messages.

A message body (XMPP ``<body>``) is one of (Protocol-v3, "OTR messages"):

* a fragment: ``?OTR|sender|receiver,k,n,piece,`` (see :mod:`.fragments`);
* an encoded message: ``?OTR:`` base64 ``.``, holding one of the binary
  messages below;
* an error message: ``?OTR Error:`` and text;
* a query message: ``?OTRv3?`` and so on, anywhere in the body;
* plain text, possibly carrying a whitespace tag that offers OTR.

An encoded message of an older protocol version (1 or 2) is not parsed: its
header says which version and type it is (:class:`OldEncoded`), enough to
tell a peer that starts an AKE xfer cannot finish.

Every v3 binary message starts with ``SHORT 3, BYTE type, INT sender
instance tag, INT receiver instance tag``. :func:`parse` returns a frozen
dataclass per kind, or raises :class:`~xfer.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import ClassVar

from xfer.errors import RemoteProtocolError
from xfer.otr.crypto import DH_MODULUS_BYTES
from xfer.otr.data import (
    Reader,
    encode_byte,
    encode_data,
    encode_int,
    encode_mpi,
    encode_short,
)

__all__ = [
    "PROTOCOL_VERSION",
    "WHITESPACE_BASE",
    "WHITESPACE_V2",
    "WHITESPACE_V3",
    "DHCommit",
    "DHKey",
    "DataMessage",
    "EncodedMessage",
    "ErrorMessage",
    "OldEncoded",
    "PlainText",
    "QueryMessage",
    "RevealSignature",
    "Signature",
    "parse_encoded",
    "parse_text",
]

PROTOCOL_VERSION = 3
MIN_INSTANCE_TAG = 0x100

WHITESPACE_BASE = "\x20\x09\x20\x20\x09\x09\x09\x09\x20\x09\x20\x09\x20\x09\x20\x20"
WHITESPACE_V1 = "\x20\x09\x20\x09\x20\x20\x09\x20"
WHITESPACE_V2 = "\x20\x20\x09\x09\x20\x20\x09\x20"
WHITESPACE_V3 = "\x20\x20\x09\x09\x20\x20\x09\x09"
_WHITESPACE_VERSIONS = {WHITESPACE_V1: 1, WHITESPACE_V2: 2, WHITESPACE_V3: 3}

ENCODED_PREFIX = "?OTR:"
ERROR_PREFIX = "?OTR Error:"
FRAGMENT_PREFIX = "?OTR|"
#: A body longer than this is not parsed (bounded work per message).
MAX_BODY = 4 * 1024 * 1024
#: Nor an encoded message longer than this (its base64 text), so that one
#: forged message costs the event loop well under a millisecond of decoding
#: and MAC checking. XMPP servers refuse larger stanzas anyway (Prosody's
#: default limit is 256 KiB), and xfer's largest message, a TLV 8 offer, is
#: under 64 KiB.
MAX_ENCODED = 256 * 1024

#: Bounds on what the AKE messages carry, checked while parsing so that no
#: oversized value ever reaches arithmetic: g^x and g^y are at most as long
#: as the 1536-bit modulus (the commit holds MPI(g^x), so 4 bytes more); the
#: revealed key is 16 bytes; the encrypted signed part is a PUBKEY (DSA p of
#: at most 3072 bits), a key id and a 40-byte signature, well under 2 KiB.
_MAX_COMMIT_GX = 4 + DH_MODULUS_BYTES
_MAX_REVEALED_KEY = 16
_MAX_SIGNED_PART = 2048

#: ``?OTR``, then ``?`` for version 1, then ``v``, the other versions (one
#: character each; libotr reads only 2 and 3, and so skips the rest, as in
#: Protocol-v3's ``?OTRv24x?``) and ``?``.
_QUERY = re.compile(r"\?OTR(\?)?(?:v([^?]*)\?)?")
_TAG_CHARS = frozenset(" \t")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlainText:
    """A message that is not OTR, minus any whitespace tag."""

    text: str
    #: Versions offered by a whitespace tag (empty when there was none).
    tag_versions: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class OldEncoded:
    """An encoded message of protocol version 1 or 2, which xfer does not
    speak: only its header is read (version 2 messages carry no instance
    tags)."""

    #: A version 2 D-H Commit (the same type in version 3).
    V2_COMMIT: ClassVar[tuple[int, int]] = (2, 0x02)
    #: A version 1 Key Exchange, with which version 1 starts its AKE.
    V1_KEY_EXCHANGE: ClassVar[tuple[int, int]] = (1, 0x0A)

    version: int
    kind: int

    @property
    def starts_ake(self) -> bool:
        """Whether the peer starts an AKE of its version with this message."""
        return (self.version, self.kind) in (self.V2_COMMIT, self.V1_KEY_EXCHANGE)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryMessage:
    """``?OTRv3?``: the sender would like to talk OTR in these versions."""

    versions: frozenset[int]

    def encode(self) -> str:
        digits = "".join(str(v) for v in sorted(self.versions) if v >= 2)
        return f"?OTRv{digits}?"


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """``?OTR Error:`` and a human-readable text."""

    text: str

    def encode(self) -> str:
        return f"{ERROR_PREFIX} {self.text}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedMessage:
    """Fields common to every v3 binary message."""

    TYPE: ClassVar[int]
    sender_tag: int
    receiver_tag: int

    def _body(self) -> bytes:
        raise NotImplementedError

    def _header(self) -> bytes:
        return (
            encode_short(PROTOCOL_VERSION)
            + encode_byte(self.TYPE)
            + encode_int(self.sender_tag)
            + encode_int(self.receiver_tag)
        )

    def to_bytes(self) -> bytes:
        return self._header() + self._body()

    def encode(self) -> str:
        """The ``?OTR:...`` text of this message."""
        return ENCODED_PREFIX + base64.b64encode(self.to_bytes()).decode("ascii") + "."


@dataclass(frozen=True, slots=True, kw_only=True)
class DHCommit(EncodedMessage):
    TYPE: ClassVar[int] = 0x02
    encrypted_gx: bytes
    hashed_gx: bytes

    def _body(self) -> bytes:
        return encode_data(self.encrypted_gx) + encode_data(self.hashed_gx)

    @classmethod
    def _read(cls, r: Reader, sender: int, receiver: int) -> DHCommit:
        encrypted, hashed = r.data(_MAX_COMMIT_GX), r.data(32)
        if len(hashed) != 32:
            raise RemoteProtocolError("D-H Commit hash must be 32 bytes")
        return cls(
            sender_tag=sender,
            receiver_tag=receiver,
            encrypted_gx=encrypted,
            hashed_gx=hashed,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DHKey(EncodedMessage):
    TYPE: ClassVar[int] = 0x0A
    gy: int

    def _body(self) -> bytes:
        return encode_mpi(self.gy)

    @classmethod
    def _read(cls, r: Reader, sender: int, receiver: int) -> DHKey:
        return cls(sender_tag=sender, receiver_tag=receiver, gy=r.mpi(DH_MODULUS_BYTES))


@dataclass(frozen=True, slots=True, kw_only=True)
class RevealSignature(EncodedMessage):
    TYPE: ClassVar[int] = 0x11
    revealed_key: bytes
    encrypted_signature: bytes
    mac: bytes

    def _body(self) -> bytes:
        return (
            encode_data(self.revealed_key)
            + encode_data(self.encrypted_signature)
            + self.mac
        )

    @classmethod
    def _read(cls, r: Reader, sender: int, receiver: int) -> RevealSignature:
        return cls(
            sender_tag=sender,
            receiver_tag=receiver,
            revealed_key=r.data(_MAX_REVEALED_KEY),
            encrypted_signature=r.data(_MAX_SIGNED_PART),
            mac=r.take(20),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature(EncodedMessage):
    TYPE: ClassVar[int] = 0x12
    encrypted_signature: bytes
    mac: bytes

    def _body(self) -> bytes:
        return encode_data(self.encrypted_signature) + self.mac

    @classmethod
    def _read(cls, r: Reader, sender: int, receiver: int) -> Signature:
        return cls(
            sender_tag=sender,
            receiver_tag=receiver,
            encrypted_signature=r.data(_MAX_SIGNED_PART),
            mac=r.take(20),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataMessage(EncodedMessage):
    """An encrypted data message (type 3)."""

    TYPE: ClassVar[int] = 0x03
    FLAG_IGNORE_UNREADABLE: ClassVar[int] = 0x01
    flags: int
    sender_keyid: int
    recipient_keyid: int
    next_dh: int
    ctr: bytes
    encrypted: bytes
    mac: bytes = b""
    old_mac_keys: bytes = b""

    def authenticated_bytes(self) -> bytes:
        """What the MAC covers: everything from the version to the ciphertext."""
        return self._header() + self._signed_body()

    def _signed_body(self) -> bytes:
        return (
            encode_byte(self.flags)
            + encode_int(self.sender_keyid)
            + encode_int(self.recipient_keyid)
            + encode_mpi(self.next_dh)
            + self.ctr
            + encode_data(self.encrypted)
        )

    def _body(self) -> bytes:
        return self._signed_body() + self.mac + encode_data(self.old_mac_keys)

    @classmethod
    def _read(cls, r: Reader, sender: int, receiver: int) -> DataMessage:
        return cls(
            sender_tag=sender,
            receiver_tag=receiver,
            flags=r.u8(),
            sender_keyid=r.u32(),
            recipient_keyid=r.u32(),
            next_dh=r.mpi(DH_MODULUS_BYTES),
            ctr=r.take(8),
            encrypted=r.data(),
            mac=r.take(20),
            old_mac_keys=r.data(),
        )


_TYPES: dict[
    int, type[DHCommit | DHKey | RevealSignature | Signature | DataMessage]
] = {
    cls.TYPE: cls for cls in (DHCommit, DHKey, RevealSignature, Signature, DataMessage)
}

Encoded = DHCommit | DHKey | RevealSignature | Signature | DataMessage


def parse_encoded(text: str) -> Encoded:
    """Parse ``?OTR:...`` text into a binary message.

    Raises:
        RemoteProtocolError: bad base64, wrong version, unknown type, bad
            instance tags, truncation or trailing bytes.
    """
    if not text.startswith(ENCODED_PREFIX):
        raise RemoteProtocolError("not an OTR encoded message")
    if len(text) > MAX_ENCODED:
        raise RemoteProtocolError("OTR encoded message is too long")
    end = text.find(".", len(ENCODED_PREFIX))
    if end < 0:
        raise RemoteProtocolError("OTR encoded message has no final '.'")
    try:
        raw = base64.b64decode(text[len(ENCODED_PREFIX) : end], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError("OTR encoded message is not valid base64") from exc
    r = Reader(raw)
    version = r.u16()
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported OTR protocol version {version}")
    kind = r.u8()
    sender, receiver = r.u32(), r.u32()
    cls = _TYPES.get(kind)
    if cls is None:
        raise RemoteProtocolError(f"unknown OTR message type {kind:#x}")
    if sender < MIN_INSTANCE_TAG:
        raise RemoteProtocolError("invalid sender instance tag")
    if receiver != 0 and receiver < MIN_INSTANCE_TAG:
        raise RemoteProtocolError("invalid receiver instance tag")
    message = cls._read(r, sender, receiver)
    r.end()
    return message


def _query_versions(text: str) -> frozenset[int] | None:
    """The versions the first ``?OTR`` of ``text`` asks for, if it is a query
    (``?OTR?`` or ``?OTRv...?``); digits name versions, other characters
    (future versions with other names) are skipped."""
    match = _QUERY.search(text)
    if match is None or match.group(0) == "?OTR":
        return None
    versions: set[int] = set()
    if match.group(1):
        versions.add(1)
    if match.group(2):
        versions.update(int(c) for c in set(match.group(2)) if c in "123456789")
    return frozenset(versions)


def _old_encoded(text: str) -> OldEncoded | None:
    """The header of an encoded message of version 1 or 2, if ``text`` is one:
    the first four base64 characters hold the version (SHORT) and type."""
    try:
        head = base64.b64decode(text[len(ENCODED_PREFIX) :][:4], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(head) != 3 or head[:2] not in (b"\x00\x01", b"\x00\x02"):
        return None
    return OldEncoded(version=head[1], kind=head[2])


def _whitespace_tag(text: str) -> PlainText | None:
    """The plain text without its whitespace tag, and the versions the tag
    offers, if ``text`` carries one (the first). As libotr reads it, every
    group of 8 spaces and tabs after the base is part of the tag, and only
    the groups of versions 1, 2 and 3 are known."""
    base = text.find(WHITESPACE_BASE)
    if base < 0:
        return None
    i = base + len(WHITESPACE_BASE)
    offered: set[int] = set()
    while len(group := text[i : i + 8]) == 8 and _TAG_CHARS.issuperset(group):
        version = _WHITESPACE_VERSIONS.get(group)
        if version is not None:
            offered.add(version)
        i += 8
    return PlainText(text=text[:base] + text[i:], tag_versions=frozenset(offered))


def parse_text(
    text: str,
) -> PlainText | QueryMessage | ErrorMessage | OldEncoded | Encoded:
    """Classify a message body. Fragments must be handled before this.

    Raises:
        RemoteProtocolError: an encoded message that does not parse.
    """
    if len(text) > MAX_BODY:
        raise RemoteProtocolError("message body is too long")
    if text.startswith(ENCODED_PREFIX):
        old = _old_encoded(text)
        return parse_encoded(text) if old is None else old
    if ERROR_PREFIX in text:
        return ErrorMessage(text=text.split(ERROR_PREFIX, 1)[1].strip())
    versions = _query_versions(text)
    if versions is not None:
        return QueryMessage(versions=versions)
    tagged = _whitespace_tag(text)
    return PlainText(text=text) if tagged is None else tagged
