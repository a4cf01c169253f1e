"""The XEP-0234 (Jingle File Transfer, ft:5) model as plain data; no XML here.

What the Jingle offer says about a file, what a ranged request asks for, and
the informational payloads (checksum, received). In xfer the description
carries only what the servers may see: the *sealed* size and an opaque name;
the real name, size and hash travel inside OTR (``spec/otr.md`` section 5).

Hash algorithm names are XEP-0300's (``sha-256``, ``sha-512``,
``blake2b-256`` ...), not slixmpp's spellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HASH_SIZES",
    "NS_FILE_TRANSFER",
    "Checksum",
    "FileDescription",
    "Range",
    "Received",
]

NS_FILE_TRANSFER = "urn:xmpp:jingle:apps:file-transfer:5"
#: XEP-0300 algorithm names we accept, and their digest sizes.
HASH_SIZES = {
    "sha-256": 32,
    "sha-384": 48,
    "sha-512": 64,
    "sha3-256": 32,
    "sha3-512": 64,
    "blake2b-256": 32,
    "blake2b-512": 64,
}
MAX_NAME = 1024
MAX_SIZE = 1 << 62


def _check_hashes(
    hashes: tuple[tuple[str, bytes], ...], error: type[Exception]
) -> None:
    for algo, digest in hashes:
        size = HASH_SIZES.get(algo)
        if size is None:
            raise error(f"unsupported hash algorithm {algo!r}")
        if len(digest) != size:
            raise error(f"a {algo} digest is {size} bytes, not {len(digest)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """``<range offset length/>``: resume from ``offset`` (bytes of the stream)."""

    offset: int = 0
    length: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= MAX_SIZE:
            raise RemoteProtocolError("range offset out of bounds")
        if self.length is not None and not 0 <= self.length <= MAX_SIZE:
            raise RemoteProtocolError("range length out of bounds")

    def within(self, size: int) -> bool:
        """Whether the range fits in a stream of ``size`` bytes."""
        end = self.offset + (self.length if self.length is not None else 0)
        return self.offset <= size and end <= size


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDescription:
    """The ``<file/>`` of an offer (what the servers see).

    Raises:
        RemoteProtocolError: a field out of bounds (the peer sent it).
    """

    name: str
    #: The sealed size; None for a stream, whose size is known only at its
    #: end (XEP-0234 makes ``<size/>`` optional; spec/jingle.md 3.2).
    size: int | None
    media_type: str = "application/octet-stream"
    date: str | None = None
    desc: str | None = None
    hashes: tuple[tuple[str, bytes], ...] = field(default=())
    range: Range | None = None

    def __post_init__(self) -> None:
        if not 0 < len(self.name.encode("utf-8")) <= MAX_NAME or "\x00" in self.name:
            raise RemoteProtocolError(
                "a file name is 1 to 1024 UTF-8 bytes without NUL"
            )
        if self.size is not None and not 0 <= self.size <= MAX_SIZE:
            raise RemoteProtocolError("file size out of bounds")
        if len(self.media_type) > 255:
            raise RemoteProtocolError("media type too long")
        _check_hashes(self.hashes, RemoteProtocolError)
        if self.range is not None and (
            self.size is None or not self.range.within(self.size)
        ):
            raise RemoteProtocolError("the range lies outside the file")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checksum:
    """session-info ``<checksum/>``: the hash of a content's file, sent later."""

    content: str
    hashes: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.hashes:
            raise LocalProtocolError("a checksum carries at least one hash")
        _check_hashes(self.hashes, LocalProtocolError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """session-info ``<received/>``: the file of a content arrived whole."""

    content: str
