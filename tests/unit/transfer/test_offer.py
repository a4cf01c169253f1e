"""xfer's TLV 8 payloads: the offer (versions 1 and 2, its media type), the
sender's digest, the receiver's verdict, and the file id."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import make_offer, old_module
from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.transfer.offer import (
    FILE_ID_SAMPLE,
    FLAG_STREAM,
    TransferDigest,
    TransferOffer,
    TransferVerdict,
    decode_payload,
    file_id,
)


def offer(media_type: str) -> TransferOffer:
    return make_offer(zeroed=True, media_type=media_type)


@pytest.mark.parametrize(
    "media_type",
    [
        "application/octet-stream",
        "image/svg+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "",
    ],
)
def test_ordinary_media_types_pass(media_type: str) -> None:
    got = decode_payload(offer(media_type).encode())
    assert isinstance(got, TransferOffer)
    assert got.media_type == media_type


@pytest.mark.parametrize(
    "media_type",
    [
        "text/plain\r  trusted: yes",  # rewrites the terminal line
        "text/plain\x1b[8m",  # hides what follows
        "text/plain; charset=utf-8",  # parameters: spaces and '='
        "text/ plain",
        "text",
        "/plain",
        "text/plain/x",
        "text/pl\x7fain",
        "-text/plain",
    ],
)
def test_media_types_outside_rfc_6838_are_refused(media_type: str) -> None:
    encoded = offer("a/b").encode()
    raw = media_type.encode("ascii")
    hostile = encoded[: -1 - 3] + bytes([len(raw)]) + raw
    with pytest.raises(RemoteProtocolError):
        TransferOffer.decode(hostile)
    with pytest.raises(LocalProtocolError):
        offer(media_type)


@given(st.text(max_size=300))
def test_a_decoded_media_type_has_only_token_characters(text: str) -> None:
    raw = text.encode("utf-8")[:255]
    hostile = offer("a/b").encode()[:-4] + bytes([len(raw)]) + raw
    try:
        got = TransferOffer.decode(hostile)
    except RemoteProtocolError:
        return
    assert all(c.isalnum() or c in "!#$&^_.+-/" for c in got.media_type)
    assert got.media_type.isascii()


def test_a_verdict_round_trips() -> None:
    stored = TransferVerdict(
        transfer_id=bytes(range(16)), stored=True, sha256=b"\x07" * 32, size=99
    )
    refused = TransferVerdict(
        transfer_id=bytes(16), stored=False, reason="stream cut after 5 verified bytes"
    )
    assert decode_payload(stored.encode()) == stored
    assert decode_payload(refused.encode()) == refused


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda b: b[:-1], "truncated reason"),
        (lambda b: b + b"x", "trailing byte"),
        (lambda b: b[:18] + b"\x05" + b[19:], "unknown status"),
        (lambda b: b"\x02" + b[1:], "unknown version"),
        (lambda b: b[:10], "truncated"),
    ],
)
def test_malformed_verdicts_are_refused(edit: object, why: str) -> None:
    good = TransferVerdict(transfer_id=bytes(16), stored=False, reason="no").encode()
    assert callable(edit)
    with pytest.raises(RemoteProtocolError):
        decode_payload(edit(good))


def test_a_reason_is_bounded() -> None:
    with pytest.raises(LocalProtocolError):
        TransferVerdict(transfer_id=bytes(16), stored=False, reason="x" * 513)


# -- version 2 offers ----------------------------------------------------------


def test_a_version_2_offer_names_the_file_by_its_id() -> None:
    ident = bytes(range(32))
    offer = make_offer(file_id=ident, size=5, name="x.bin", mtime=7)
    raw = offer.encode()
    assert raw[:3] == b"\x02\x01\x00"  # version 2, an offer, no flags
    # flags, transfer id, salt, suite, chunk size, size: then the file id.
    assert raw[2 + 1 + 16 + 32 + 1 + 4 + 8 :][:32] == ident
    got = decode_payload(raw)
    assert got == offer
    assert isinstance(got, TransferOffer)
    assert (got.version, got.file_id, got.sha256, got.identity) == (
        2,
        ident,
        None,
        ident,
    )


def test_a_version_1_offer_is_still_read() -> None:
    digest = hashlib.sha256(b"abc").digest()
    offer = make_offer(sha256=digest, size=3)
    raw = offer.encode()
    assert raw[:2] == b"\x01\x01"
    # The version 1 layout: no flags, the SHA-256 where version 2 has the id.
    assert raw[2 + 16 + 32 + 1 + 4 + 8 :][:32] == digest
    got = TransferOffer.decode(raw)
    assert got == offer
    assert (got.version, got.sha256, got.file_id, got.identity) == (
        1,
        digest,
        None,
        digest,
    )


def test_an_offer_has_a_file_id_or_a_hash() -> None:
    fields = {
        f.name: getattr(make_offer(), f.name) for f in dataclasses.fields(TransferOffer)
    }
    with pytest.raises(LocalProtocolError):
        TransferOffer(**{**fields, "file_id": None})
    with pytest.raises(LocalProtocolError):
        TransferOffer(**{**fields, "sha256": bytes(32)})
    with pytest.raises(LocalProtocolError):
        TransferOffer(**{**fields, "file_id": bytes(31)})


@pytest.mark.parametrize("flags", [0x02, 0x03, 0x80, 0xFF])
def test_unknown_flags_are_refused(flags: int) -> None:
    raw = bytearray(make_offer().encode())
    raw[2] = flags
    with pytest.raises(RemoteProtocolError, match="flags"):
        TransferOffer.decode(bytes(raw))
    with pytest.raises(LocalProtocolError):
        make_offer(flags=flags)


# -- stream offers (FLAG_STREAM) -------------------------------------------------


def stream_offer(**extra: object) -> TransferOffer:
    return TransferOffer.stream(
        transfer_id=bytes(range(16)),
        salt=b"\x05" * 32,
        suite=1,
        chunk_size=65536,
        name="backup.tar",
        **extra,  # type: ignore[arg-type]
    )


def test_a_stream_offer_sets_flag_1_and_has_no_size_and_no_file_id() -> None:
    offer = stream_offer()
    raw = offer.encode()
    assert FLAG_STREAM == 0x01
    assert raw[:3] == b"\x02\x01\x01"  # version 2, an offer, FLAG_STREAM
    fixed = 3 + 16 + 32 + 1 + 4
    assert raw[fixed : fixed + 8 + 32] == bytes(40)  # size and file id: zero
    got = decode_payload(raw)
    assert got == offer
    assert isinstance(got, TransferOffer)
    assert got.is_stream
    assert (got.size, got.flags) == (0, FLAG_STREAM)
    assert not make_offer().is_stream


@pytest.mark.parametrize(
    ("offset", "what"), [(3 + 16 + 32 + 1 + 4, "size"), (3 + 16 + 32 + 1 + 4 + 8, "id")]
)
def test_a_stream_offer_with_a_size_or_a_file_id_is_refused(
    offset: int, what: str
) -> None:
    # A forged stream flag on a file offer, or a stream that claims a size:
    # one of the two readings would be wrong, so neither is taken.
    raw = bytearray(stream_offer().encode())
    raw[offset + 7 if what == "size" else offset] = 1
    with pytest.raises(RemoteProtocolError, match="stream"):
        TransferOffer.decode(bytes(raw))
    file_offer = bytearray(make_offer(size=5).encode())
    file_offer[2] = FLAG_STREAM
    with pytest.raises(RemoteProtocolError, match="stream"):
        TransferOffer.decode(bytes(file_offer))
    with pytest.raises(LocalProtocolError):
        make_offer(size=5, flags=FLAG_STREAM)


def test_a_version_1_offer_has_no_flags_so_no_stream() -> None:
    with pytest.raises(LocalProtocolError):
        make_offer(sha256=bytes(32), size=0, flags=FLAG_STREAM)


def test_a_receiver_from_before_streams_refuses_a_stream_offer() -> None:
    # The decoder of the last release without streams (KNOWN_FLAGS = 0), as
    # it was (a frozen copy): it must refuse the offer, not misread it.
    old = old_module("transfer_offer")
    with pytest.raises(RemoteProtocolError, match="unknown flags"):
        old.decode_payload(stream_offer().encode())
    assert old.decode_payload(make_offer(size=5).encode()).size == 5


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda b: b + b"x", "trailing byte"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:40], "cut in the fixed part"),
        (lambda b: b"\x03" + b[1:], "unknown version"),
        (lambda b: b"\x00" + b[1:], "version 0"),
        (lambda b: b[:1] + b"\x04" + b[2:], "unknown kind"),
        # A version 2 offer read as version 1: one byte off everywhere.
        (lambda b: b"\x01" + b[1:], "version 1 label on a version 2 body"),
    ],
)
def test_malformed_version_2_offers_are_refused(edit: object, why: str) -> None:
    good = make_offer(name="report.pdf", media_type="a/b").encode()
    assert callable(edit)
    with pytest.raises(RemoteProtocolError):
        decode_payload(edit(good))


# -- the digest ----------------------------------------------------------------


def test_a_digest_round_trips_and_is_50_plus_8_bytes() -> None:
    digest = TransferDigest(
        transfer_id=bytes(range(16)), sha256=b"\x09" * 32, size=2**40 + 1
    )
    raw = digest.encode()
    assert raw == b"\x01\x03" + bytes(range(16)) + b"\x09" * 32 + struct.pack(
        ">Q", 2**40 + 1
    )
    assert decode_payload(raw) == digest


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda b: b + b"\x00", "trailing byte"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b"\x02" + b[1:], "unknown version"),
        (lambda b: b[:2], "no body"),
    ],
)
def test_malformed_digests_are_refused(edit: object, why: str) -> None:
    good = TransferDigest(transfer_id=bytes(16), sha256=bytes(32), size=1).encode()
    assert callable(edit)
    with pytest.raises(RemoteProtocolError):
        decode_payload(edit(good))
    with pytest.raises(RemoteProtocolError):
        TransferDigest.decode(edit(good))


def test_a_digest_is_checked_when_built() -> None:
    with pytest.raises(LocalProtocolError):
        TransferDigest(transfer_id=bytes(16), sha256=bytes(31), size=0)
    with pytest.raises(LocalProtocolError):
        TransferDigest(transfer_id=bytes(16), sha256=bytes(32), size=-1)


# -- the file id ---------------------------------------------------------------


def _id_of(content: bytes, mtime_ns: int = 10**18) -> bytes:
    n = min(len(content), FILE_ID_SAMPLE)
    return file_id(len(content), mtime_ns, content[:n], content[len(content) - n :])


def test_the_file_id_is_stable_and_covers_size_time_and_both_ends() -> None:
    content = bytes(range(256)) * 1024  # 256 KiB
    ident = _id_of(content)
    assert ident == _id_of(bytes(content))
    assert len(ident) == 32
    assert ident != hashlib.sha256(content).digest()
    head = bytearray(content)
    head[10] ^= 1
    tail = bytearray(content)
    tail[-10] ^= 1
    assert _id_of(bytes(head)) != ident
    assert _id_of(bytes(tail)) != ident
    assert _id_of(content, mtime_ns=10**18 + 1) != ident
    assert _id_of(content + b"x") != ident
    # The middle is not read: the digest after the data decides.
    middle = bytearray(content)
    middle[len(content) // 2] ^= 1
    assert _id_of(bytes(middle)) == ident


def test_the_file_id_of_a_small_or_empty_file() -> None:
    assert _id_of(b"") != _id_of(b"a")
    assert _id_of(b"ab") != _id_of(b"ba")
    with pytest.raises(LocalProtocolError):
        file_id(10, 0, b"x" * 10, b"x" * 9)
