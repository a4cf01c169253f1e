"""Shared folders inside OTR: the request and reply payloads (spec/share.md).

A *sharer* serves one directory to the peers it names; a *fetcher* asks it
what is there (``list``) and for files or whole subtrees (``get``). Both
payloads ride in OTR TLV 8 with xfer's use value, beside the offer, digest
and verdict of ``spec/otr.md`` section 5, as two more kinds:
:data:`KIND_SHARE_REQUEST` (fetcher to sharer) and :data:`KIND_SHARE_REPLY`
(sharer to fetcher). The servers see neither names, sizes nor which file was
asked for.

Theory of operation. A request carries a fresh 16-byte ``request_id``; every
reply names it. A ``list`` is answered by one :class:`ShareListing` page
(entries sorted by the bytes of their path; ``more`` says that the fetcher
asks again with ``after`` set to the last path it got). A ``get`` is answered
by :class:`GetAccepted` (how many files, how many bytes), then, per file, a
:class:`FileComing` just before the sharer offers that file under a fresh
OTR offer (the ordinary transfer of ``spec/otr.md`` 5.1, named by the same
path), a :class:`FileFailed` for a file it could not send, and at the end
:class:`GetDone`. A fetcher accepts without asking only offers that come
from the fingerprint it asked, under a name a :class:`FileComing` of its own
outstanding request announced. Anything refused is a :class:`ShareRefused`
with a :class:`RefusalCode` and words for the user.

Paths are relative to the shared directory, ``/``-separated, and checked
strictly (:func:`check_path`) in both directions: a request for ``..``, an
absolute path, a NUL, a backslash or a hidden component is malformed, and so
is a listing entry that holds one. Decoding is strict: trailing bytes, an
unknown version, type, flag or code, or a field out of range is a
:class:`~xfer.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import enum
import itertools
import re
import struct
from dataclasses import dataclass

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.transfer.share_paths import MAX_PATH_BYTES, check_path, path_key, within

__all__ = [
    "KIND_SHARE_REPLY",
    "KIND_SHARE_REQUEST",
    "MAX_PATH_BYTES",
    "MAX_SHARE_PAYLOAD",
    "SHARE_KINDS",
    "SHARE_VERSION",
    "EntryType",
    "FileComing",
    "FileFailed",
    "GetAccepted",
    "GetDone",
    "Operation",
    "RefusalCode",
    "ShareEntry",
    "ShareListing",
    "ShareRefused",
    "ShareReply",
    "ShareRequest",
    "check_path",
    "decode_reply",
    "decode_share",
    "encode_reply",
    "is_share_payload",
    "listing_page",
    "path_key",
    "request_id_of",
    "within",
]

#: The kinds of xfer's TLV 8 payloads that shared folders add (spec/otr.md
#: section 5 has 1 offer, 2 verdict, 3 digest).
KIND_SHARE_REQUEST = 4
KIND_SHARE_REPLY = 5
SHARE_KINDS = (KIND_SHARE_REQUEST, KIND_SHARE_REPLY)
SHARE_VERSION = 1
#: A reason text, at most (UTF-8 bytes).
MAX_REASON_BYTES = 512
#: No share payload is longer: with OTR's framing and base64 it stays far
#: below what XMPP servers let a stanza be (Prosody: 256 KiB by default).
MAX_SHARE_PAYLOAD = 32 * 1024

#: version, kind, request id, op, flags.
_REQUEST = struct.Struct(">BB16sBB")
#: version, kind, request id, type.
_REPLY = struct.Struct(">BB16sB")
#: entry: type, flags, size, mtime.
_ENTRY = struct.Struct(">BBQQ")
_RECURSIVE = 0x01
_MORE = 0x01
_HAS_SHA256 = 0x01
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


class Operation(enum.IntEnum):
    """What a :class:`ShareRequest` asks for."""

    LIST = 1
    GET = 2


class EntryType(enum.IntEnum):
    FILE = 1
    DIRECTORY = 2


class RefusalCode(enum.IntEnum):
    """Why a sharer refused a request (:class:`ShareRefused`)."""

    #: The asking account is not one the folder is shared with, or its
    #: fingerprint is not trusted.
    NOT_ALLOWED = 1
    #: No such file or directory in the share (hidden, special files and
    #: symbolic links are not in it either).
    NOT_FOUND = 2
    #: The request was malformed.
    BAD_REQUEST = 3
    #: Too many requests from this account at once; ask again later.
    BUSY = 4
    #: No folder is shared.
    NOT_SHARING = 5
    #: The subtree holds more files than one request may fetch.
    TOO_LARGE = 6
    #: The sharer failed otherwise (its words say how).
    FAILED = 7


class _ReplyType(enum.IntEnum):
    LISTING = 1
    ACCEPTED = 2
    FILE = 3
    FILE_FAILED = 4
    DONE = 5
    REFUSED = 6


def _put_text(text: str, width: int, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise LocalProtocolError(f"a text field is at most {limit} bytes")
    return len(raw).to_bytes(width, "big") + raw


class _Reader:
    """Strict reading of a payload: every field present, nothing left."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RemoteProtocolError("share payload is truncated")
        piece = self.data[self.pos : self.pos + n]
        self.pos += n
        return piece

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def text(self, width: int, limit: int) -> str:
        n = self.uint(width)
        if n > limit:
            raise RemoteProtocolError("share payload has a text field too long")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("share payload text is not UTF-8") from None

    def path(self, *, root: bool = False) -> str:
        text = self.text(2, MAX_PATH_BYTES)
        try:
            check_path(text, root=root)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"share payload has a bad path: {exc}") from None
        return text

    def end(self) -> None:
        if self.pos != len(self.data):
            raise RemoteProtocolError("share payload has trailing bytes")


# -- the request -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRequest:
    """A fetcher's request: list ``path`` (its children; all descendants
    when ``recursive``; only entries after ``after``, for the next page), or
    get ``path`` (a file, or every file of a directory's subtree)."""

    request_id: bytes
    op: Operation
    path: str = ""
    recursive: bool = False
    after: str = ""

    def __post_init__(self) -> None:
        if len(self.request_id) != 16:
            raise LocalProtocolError("a request id is 16 bytes")
        check_path(self.path, root=True)
        if self.after:
            check_path(self.after)
        if self.op is Operation.GET and (self.recursive or self.after):
            raise LocalProtocolError("a get has no recursive flag and no 'after'")

    def encode(self) -> bytes:
        flags = _RECURSIVE if self.recursive else 0
        return (
            _REQUEST.pack(
                SHARE_VERSION, KIND_SHARE_REQUEST, self.request_id, self.op, flags
            )
            + _put_text(self.path, 2, MAX_PATH_BYTES)
            + _put_text(self.after, 2, MAX_PATH_BYTES)
        )

    @classmethod
    def decode(cls, data: bytes) -> ShareRequest:
        """Raises RemoteProtocolError for anything but a well-formed request."""
        _check_head(data, KIND_SHARE_REQUEST, _REQUEST.size)
        _, _, request_id, op, flags = _REQUEST.unpack_from(data)
        if op not in (Operation.LIST, Operation.GET):
            raise RemoteProtocolError("share request has an unknown operation")
        if flags & ~_RECURSIVE or (op == Operation.GET and flags):
            raise RemoteProtocolError("share request has unknown flags")
        reader = _Reader(data, _REQUEST.size)
        path = reader.path(root=True)
        after = reader.text(2, MAX_PATH_BYTES)
        reader.end()
        if after:
            try:
                check_path(after)
            except LocalProtocolError as exc:
                raise RemoteProtocolError(
                    f"share request: bad 'after': {exc}"
                ) from None
        if op == Operation.GET and after:
            raise RemoteProtocolError("a get request has no 'after'")
        return cls(
            request_id=request_id,
            op=Operation(op),
            path=path,
            recursive=bool(flags),
            after=after,
        )


def _check_head(data: bytes, kind: int, size: int) -> None:
    if len(data) > MAX_SHARE_PAYLOAD:
        raise RemoteProtocolError("share payload is too long")
    if len(data) < 2 or data[1] != kind:
        raise RemoteProtocolError("not a share payload of this kind")
    if data[0] != SHARE_VERSION:
        raise RemoteProtocolError("unknown share payload version")
    if len(data) < size:
        raise RemoteProtocolError("share payload is truncated")


def request_id_of(data: bytes) -> bytes | None:
    """The request id of something that claims to be a share request (of
    our version), even a malformed one: the sharer answers it
    ``BAD_REQUEST``. None if not even that much is there."""
    if (
        len(data) >= 18
        and len(data) <= MAX_SHARE_PAYLOAD
        and data[0] == SHARE_VERSION
        and data[1] == KIND_SHARE_REQUEST
    ):
        return bytes(data[2:18])
    return None


# -- the replies -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareEntry:
    """One entry of a listing, after XEP-0329's file information: the path
    relative to the share, its type, size (0 for a directory), modification
    time (seconds since 1970), media type (empty: unknown) and SHA-256 when
    the sharer knows it (None otherwise; never for a directory)."""

    path: str
    type: EntryType
    size: int = 0
    mtime: int = 0
    media_type: str = ""
    sha256: bytes | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        if not 0 <= self.size < 2**64 or not 0 <= self.mtime < 2**64:
            raise LocalProtocolError("size or time out of range")
        if self.media_type and not _MEDIA_TYPE.fullmatch(self.media_type):
            raise LocalProtocolError("a media type is type/subtype (RFC 6838)")
        if self.sha256 is not None and len(self.sha256) != 32:
            raise LocalProtocolError("a SHA-256 is 32 bytes")
        if self.type is EntryType.DIRECTORY and (
            self.size or self.media_type or self.sha256 is not None
        ):
            raise LocalProtocolError("a directory has no size, media type or hash")

    def encode(self) -> bytes:
        flags = _HAS_SHA256 if self.sha256 is not None else 0
        return (
            _ENTRY.pack(self.type, flags, self.size, self.mtime)
            + _put_text(self.path, 2, MAX_PATH_BYTES)
            + _put_text(self.media_type, 1, 255)
            + (self.sha256 or b"")
        )

    @classmethod
    def _read(cls, reader: _Reader) -> ShareEntry:
        kind, flags, size, mtime = _ENTRY.unpack(reader.take(_ENTRY.size))
        if kind not in (EntryType.FILE, EntryType.DIRECTORY):
            raise RemoteProtocolError("listing entry of an unknown type")
        if flags & ~_HAS_SHA256:
            raise RemoteProtocolError("listing entry has unknown flags")
        path = reader.path()
        media = reader.text(1, 255)
        sha256 = reader.take(32) if flags & _HAS_SHA256 else None
        try:
            return cls(
                path=path,
                type=EntryType(kind),
                size=size,
                mtime=mtime,
                media_type=media,
                sha256=sha256,
            )
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"bad listing entry: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareListing:
    """One page of a listing; ``more``: ask again, after the last path."""

    request_id: bytes
    entries: tuple[ShareEntry, ...]
    more: bool = False

    def _body(self) -> bytes:
        if len(self.entries) > 0xFFFF:
            raise LocalProtocolError("too many entries in one page")
        return (
            bytes([_MORE if self.more else 0])
            + len(self.entries).to_bytes(2, "big")
            + b"".join(e.encode() for e in self.entries)
        )

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> ShareListing:
        flags = reader.uint(1)
        if flags & ~_MORE:
            raise RemoteProtocolError("listing has unknown flags")
        count = reader.uint(2)
        entries = tuple(ShareEntry._read(reader) for _ in range(count))
        keys = [path_key(e.path) for e in entries]
        if any(a >= b for a, b in itertools.pairwise(keys)):
            raise RemoteProtocolError("listing entries are not in order")
        return cls(request_id=request_id, entries=entries, more=bool(flags))


@dataclass(frozen=True, slots=True, kw_only=True)
class GetAccepted:
    """A get will be served: ``files`` files of ``size`` bytes in all (as
    the sharer found them; files may change before they are sent)."""

    request_id: bytes
    files: int
    size: int

    def _body(self) -> bytes:
        if not 0 <= self.files < 2**32 or not 0 <= self.size < 2**64:
            raise LocalProtocolError("count or size out of range")
        return struct.pack(">IQ", self.files, self.size)

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> GetAccepted:
        files, size = struct.unpack(">IQ", reader.take(12))
        return cls(request_id=request_id, files=files, size=size)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileComing:
    """The sharer is about to offer ``path`` (``size`` bytes, as it is now)
    for this request: the next offers under that name from this fingerprint
    answer it (a resume offers the same name again)."""

    request_id: bytes
    path: str
    size: int

    def __post_init__(self) -> None:
        check_path(self.path)
        if not 0 <= self.size < 2**64:
            raise LocalProtocolError("size out of range")

    def _body(self) -> bytes:
        return self.size.to_bytes(8, "big") + _put_text(self.path, 2, MAX_PATH_BYTES)

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> FileComing:
        size = reader.uint(8)
        return cls(request_id=request_id, path=reader.path(), size=size)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFailed:
    """The sharer could not send ``path`` (``reason`` says why)."""

    request_id: bytes
    path: str
    reason: str

    def __post_init__(self) -> None:
        check_path(self.path)
        if len(self.reason.encode("utf-8")) > MAX_REASON_BYTES:
            raise LocalProtocolError("a reason is at most 512 UTF-8 bytes")

    def _body(self) -> bytes:
        return _put_text(self.path, 2, MAX_PATH_BYTES) + _put_text(
            self.reason, 2, MAX_REASON_BYTES
        )

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> FileFailed:
        path = reader.path()
        return cls(
            request_id=request_id, path=path, reason=reader.text(2, MAX_REASON_BYTES)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GetDone:
    """The sharer finished a get: ``sent`` files delivered (each on the
    fetcher's own verdict), ``failed`` not."""

    request_id: bytes
    sent: int
    failed: int

    def _body(self) -> bytes:
        if not 0 <= self.sent < 2**32 or not 0 <= self.failed < 2**32:
            raise LocalProtocolError("count out of range")
        return struct.pack(">II", self.sent, self.failed)

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> GetDone:
        sent, failed = struct.unpack(">II", reader.take(8))
        return cls(request_id=request_id, sent=sent, failed=failed)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRefused:
    """The sharer refused the request: ``code`` and words for the user."""

    request_id: bytes
    code: RefusalCode
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.reason.encode("utf-8")) > MAX_REASON_BYTES:
            raise LocalProtocolError("a reason is at most 512 UTF-8 bytes")

    def _body(self) -> bytes:
        return bytes([self.code]) + _put_text(self.reason, 2, MAX_REASON_BYTES)

    @classmethod
    def _read(cls, request_id: bytes, reader: _Reader) -> ShareRefused:
        code = reader.uint(1)
        if code not in RefusalCode._value2member_map_:
            raise RemoteProtocolError("share refusal with an unknown code")
        return cls(
            request_id=request_id,
            code=RefusalCode(code),
            reason=reader.text(2, MAX_REASON_BYTES),
        )


ShareReply = (
    ShareListing | GetAccepted | FileComing | FileFailed | GetDone | ShareRefused
)

_TYPES: dict[type[ShareReply], _ReplyType] = {
    ShareListing: _ReplyType.LISTING,
    GetAccepted: _ReplyType.ACCEPTED,
    FileComing: _ReplyType.FILE,
    FileFailed: _ReplyType.FILE_FAILED,
    GetDone: _ReplyType.DONE,
    ShareRefused: _ReplyType.REFUSED,
}
_READERS = {kind: cls for cls, kind in _TYPES.items()}


def encode_reply(reply: ShareReply) -> bytes:
    """The TLV 8 use-specific data of ``reply``.

    Raises:
        LocalProtocolError: it would be longer than MAX_SHARE_PAYLOAD.
    """
    if len(reply.request_id) != 16:
        raise LocalProtocolError("a request id is 16 bytes")
    data = (
        _REPLY.pack(
            SHARE_VERSION, KIND_SHARE_REPLY, reply.request_id, _TYPES[type(reply)]
        )
        + reply._body()
    )
    if len(data) > MAX_SHARE_PAYLOAD:
        raise LocalProtocolError("a share reply is at most 32 KiB")
    return data


def decode_reply(data: bytes) -> ShareReply:
    """Raises RemoteProtocolError for anything but a well-formed reply."""
    _check_head(data, KIND_SHARE_REPLY, _REPLY.size)
    _, _, request_id, kind = _REPLY.unpack_from(data)
    if kind not in _ReplyType._value2member_map_:
        raise RemoteProtocolError("share reply of an unknown type")
    cls = _READERS[_ReplyType(kind)]
    reader = _Reader(data, _REPLY.size)
    try:
        reply: ShareReply = cls._read(request_id, reader)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid share reply: {exc}") from None
    reader.end()
    return reply


def decode_share(data: bytes) -> ShareRequest | ShareReply:
    """A share request or reply (told apart by the kind byte).

    Raises:
        RemoteProtocolError: neither, well-formed.
    """
    if len(data) >= 2 and data[1] == KIND_SHARE_REQUEST:
        return ShareRequest.decode(data)
    return decode_reply(data)


def is_share_payload(data: bytes) -> bool:
    """Whether xfer's TLV 8 ``data`` is of a share kind (by its kind byte)."""
    return len(data) >= 2 and data[1] in SHARE_KINDS


def listing_page(
    request_id: bytes, entries: list[ShareEntry], after: str = ""
) -> ShareListing:
    """The page of ``entries`` that follows ``after``: the entries whose path
    sorts after it, in order, as many as fit in one payload; ``more`` when
    some are left."""
    ordered = sorted(entries, key=lambda e: path_key(e.path))
    start = path_key(after) if after else None
    budget = MAX_SHARE_PAYLOAD - _REPLY.size - 3
    page: list[ShareEntry] = []
    more = False
    for entry in ordered:
        if start is not None and path_key(entry.path) <= start:
            continue
        size = len(entry.encode())
        if size > budget or len(page) == 0xFFFF:
            more = True
            break
        budget -= size
        page.append(entry)
    return ShareListing(request_id=request_id, entries=tuple(page), more=more)
