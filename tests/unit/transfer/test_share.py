"""The shared-folder payloads (spec/share.md): round trips, strict decoding,
pagination."""

from __future__ import annotations

import pytest

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.transfer.offer import TransferOffer, decode_payload
from xfer.transfer.share import (
    KIND_SHARE_REPLY,
    KIND_SHARE_REQUEST,
    MAX_SHARE_PAYLOAD,
    EntryType,
    FileComing,
    FileFailed,
    GetAccepted,
    GetDone,
    Operation,
    RefusalCode,
    ShareEntry,
    ShareListing,
    ShareRefused,
    ShareRequest,
    decode_reply,
    decode_share,
    encode_reply,
    is_share_payload,
    listing_page,
    request_id_of,
)

RID = bytes(range(16))


def entry(path: str, **kw: object) -> ShareEntry:
    return ShareEntry(path=path, type=EntryType.FILE, **kw)  # type: ignore[arg-type]


def test_request_round_trip_and_layout():
    req = ShareRequest(
        request_id=RID, op=Operation.LIST, path="2024/jan", recursive=True, after="a"
    )
    data = req.encode()
    assert data[:2] == bytes([1, KIND_SHARE_REQUEST])
    assert data[2:18] == RID
    assert data[18:20] == bytes([1, 1])  # list, recursive
    assert data[20:22] == (8).to_bytes(2, "big")
    assert ShareRequest.decode(data) == req
    assert decode_share(data) == req
    get = ShareRequest(request_id=RID, op=Operation.GET, path="")
    assert decode_share(get.encode()) == get


@pytest.mark.parametrize(
    "reply",
    [
        ShareListing(
            request_id=RID,
            entries=(
                ShareEntry(path="a", type=EntryType.DIRECTORY, mtime=5),
                entry(
                    "a/b.jpg",
                    size=10,
                    mtime=1_700_000_000,
                    media_type="image/jpeg",
                    sha256=bytes(32),
                ),
                entry("b"),
            ),
            more=True,
        ),
        ShareListing(request_id=RID, entries=()),
        GetAccepted(request_id=RID, files=3, size=2**40),
        FileComing(request_id=RID, path="dir/ünï.txt", size=7),
        FileFailed(request_id=RID, path="x", reason="it kept changing"),
        GetDone(request_id=RID, sent=2, failed=1),
        ShareRefused(request_id=RID, code=RefusalCode.NOT_ALLOWED, reason="no"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_reply_round_trip(reply):
    data = encode_reply(reply)
    assert data[:2] == bytes([1, KIND_SHARE_REPLY])
    assert data[2:18] == RID
    assert decode_reply(data) == reply
    assert decode_share(data) == reply
    assert is_share_payload(data)
    # Strict: every cut and every extra byte is an error, never a shorter reply.
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_reply(data[:cut])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_reply(data + b"\x00")


def test_share_kinds_are_not_transfer_payloads():
    # A receiver of version 1 of the profile ignores them (an unknown kind).
    data = ShareRequest(request_id=RID, op=Operation.LIST).encode()
    with pytest.raises(RemoteProtocolError, match="kind"):
        decode_payload(data)
    offer = TransferOffer(
        transfer_id=RID,
        salt=bytes(32),
        suite=1,
        chunk_size=65536,
        size=1,
        name="x",
        file_id=bytes(32),
    )
    assert not is_share_payload(offer.encode())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: bytes([2]) + d[1:], "version"),
        (lambda d: d[:18] + bytes([3]) + d[19:], "operation"),
        (lambda d: d[:19] + bytes([2]) + d[20:], "flags"),
        (lambda d: d + b"x", "trailing"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + bytes(MAX_SHARE_PAYLOAD), "too long"),
    ],
)
def test_request_strict_decoding(mutate, message):
    data = ShareRequest(request_id=RID, op=Operation.LIST, path="a").encode()
    with pytest.raises(RemoteProtocolError, match=message):
        ShareRequest.decode(mutate(data))


def raw_request(path: bytes, after: bytes = b"", op: int = 1, flags: int = 0) -> bytes:
    return (
        bytes([1, KIND_SHARE_REQUEST])
        + RID
        + bytes([op, flags])
        + len(path).to_bytes(2, "big")
        + path
        + len(after).to_bytes(2, "big")
        + after
    )


@pytest.mark.parametrize(
    "path",
    [
        b"..",
        b"../etc/passwd",
        b"a/../../b",
        b"/etc/passwd",
        b"a//b",
        b"a/",
        b"./a",
        b"a\x00b",
        b"a\\..\\b",
        b"..\\x",
        b".hidden",
        b"a/.git/config",
        "\uff0e\uff0e/x".encode(),  # fullwidth dots: NFKC makes them '..'
        "a\uff0fb".encode(),  # fullwidth solidus
        "a\u202eb".encode(),  # a bidi override
        b"a\nb",
        b"\xff\xfe",  # not UTF-8
        b"a/" * 33 + b"a",
        b"x" * 1025,
    ],
)
def test_requests_for_paths_outside_the_share_are_malformed(path):
    data = raw_request(path)
    with pytest.raises(RemoteProtocolError):
        ShareRequest.decode(data)
    # ... yet the sharer can still say so to the right request.
    assert request_id_of(data) == RID


def test_a_get_has_no_after_and_no_recursive_flag():
    with pytest.raises(RemoteProtocolError):
        ShareRequest.decode(raw_request(b"a", op=2, flags=1))
    with pytest.raises(RemoteProtocolError):
        ShareRequest.decode(raw_request(b"a", after=b"b", op=2))
    with pytest.raises(RemoteProtocolError):
        ShareRequest.decode(raw_request(b"a", after=b"../b"))
    with pytest.raises(LocalProtocolError):
        ShareRequest(request_id=RID, op=Operation.GET, path="a", recursive=True)


def test_request_id_of_needs_the_head():
    assert request_id_of(b"") is None
    assert request_id_of(bytes([1, KIND_SHARE_REQUEST]) + bytes(15)) is None
    assert request_id_of(bytes([2, KIND_SHARE_REQUEST]) + bytes(16)) is None
    assert request_id_of(bytes([1, KIND_SHARE_REPLY]) + bytes(16)) is None


def test_a_listing_with_a_bad_path_or_out_of_order_is_malformed():
    good = encode_reply(ShareListing(request_id=RID, entries=(entry("a"), entry("b"))))
    swapped = good.replace(b"\x00\x01a", b"\x00\x01c")
    with pytest.raises(RemoteProtocolError, match="order"):
        decode_reply(swapped)
    dotdot = encode_reply(ShareListing(request_id=RID, entries=(entry("ab"),)))
    with pytest.raises(RemoteProtocolError, match="path"):
        decode_reply(dotdot.replace(b"\x00\x02ab", b"\x00\x02.."))
    # A directory with a size is malformed; so is an unknown entry type.
    directory = encode_reply(
        ShareListing(
            request_id=RID, entries=(ShareEntry(path="d", type=EntryType.DIRECTORY),)
        )
    )
    sized = bytearray(directory)
    sized[22 + 2 : 22 + 10] = (5).to_bytes(8, "big")
    with pytest.raises(RemoteProtocolError, match="directory"):
        decode_reply(bytes(sized))
    typed = bytearray(directory)
    typed[22] = 3
    with pytest.raises(RemoteProtocolError, match="type"):
        decode_reply(bytes(typed))


def test_unknown_reply_type_and_refusal_code_are_rejected():
    data = bytearray(encode_reply(ShareRefused(request_id=RID, code=RefusalCode.BUSY)))
    data[19] = 99
    with pytest.raises(RemoteProtocolError, match="code"):
        decode_reply(bytes(data))
    data[18] = 42
    with pytest.raises(RemoteProtocolError, match="type"):
        decode_reply(bytes(data))


def test_listing_pages_fit_one_payload_and_follow_each_other():
    entries = [entry(f"dir/{i:04d}-" + "x" * 900, size=i) for i in range(100)]
    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        page = listing_page(RID, entries, after)
        assert len(encode_reply(page)) <= MAX_SHARE_PAYLOAD
        assert decode_reply(encode_reply(page)) == page
        seen += [e.path for e in page.entries]
        pages += 1
        if not page.more:
            break
        after = page.entries[-1].path
    assert seen == sorted(e.path for e in entries)
    assert pages > 1
    assert listing_page(RID, entries, seen[-1]) == ShareListing(
        request_id=RID, entries=()
    )


def test_listing_order_is_by_utf8_bytes():
    page = listing_page(RID, [entry("é"), entry("z"), entry("a/b"), entry("a.txt")])
    assert [e.path for e in page.entries] == ["a.txt", "a/b", "z", "é"]
