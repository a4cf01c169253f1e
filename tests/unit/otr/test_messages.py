"""OTR data types, message framing and fragments."""

from __future__ import annotations

import base64

import pytest

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr.data import Reader, encode_data, encode_mpi, int_to_min_bytes
from xfer.otr.fragments import FRAGMENT_OVERHEAD, Reassembler, fragment, parse_fragment
from xfer.otr.messages import (
    WHITESPACE_BASE,
    WHITESPACE_V2,
    WHITESPACE_V3,
    DataMessage,
    DHCommit,
    DHKey,
    ErrorMessage,
    OldEncoded,
    PlainText,
    QueryMessage,
    RevealSignature,
    Signature,
    parse_encoded,
    parse_text,
)


def test_mpi_is_minimal():
    assert encode_mpi(0) == b"\x00\x00\x00\x00"
    assert encode_mpi(1) == b"\x00\x00\x00\x01\x01"
    assert encode_mpi(0x80) == b"\x00\x00\x00\x01\x80"  # no sign byte
    assert encode_mpi(0x1234) == b"\x00\x00\x00\x02\x12\x34"
    assert int_to_min_bytes(256) == b"\x01\x00"
    with pytest.raises(LocalProtocolError):
        encode_mpi(-1)


def test_data_keeps_leading_zeros():
    assert encode_data(b"\x00\x01") == b"\x00\x00\x00\x02\x00\x01"


def test_reader_reads_in_order_and_checks_bounds():
    r = Reader(b"\x07" + b"\x00\x02" + encode_mpi(300) + encode_data(b"hi") + b"x")
    assert r.u8() == 7
    assert r.u16() == 2
    assert r.mpi() == 300
    assert r.data() == b"hi"
    with pytest.raises(RemoteProtocolError, match="trailing"):
        r.end()
    with pytest.raises(RemoteProtocolError, match="truncated"):
        r.take(2)
    with pytest.raises(RemoteProtocolError, match="too long"):
        Reader(b"\xff\xff\xff\xff").data()


@pytest.mark.parametrize(
    ("text", "versions"),
    [
        ("?OTRv3?", {3}),
        ("?OTRv23? Bob has requested an <a href=...>OTR</a> conversation", {2, 3}),
        ("hello ?OTRv32? there", {2, 3}),
        ("?OTR?", {1}),
        ("?OTR?v2?", {1, 2}),
        ("?OTRv2?", {2}),
        ("?OTRv?", set()),
        ("?OTR?v?", {1}),
        # Versions named by other characters are skipped (Protocol-v3).
        ("?OTRv24x?", {2, 4}),
        ("?OTR?v24x? Alice has requested...", {1, 2, 4}),
    ],
)
def test_query_messages(text, versions):
    message = parse_text(text)
    assert message == QueryMessage(versions=frozenset(versions))


def test_query_encoding():
    assert QueryMessage(versions=frozenset({3})).encode() == "?OTRv3?"


def test_whitespace_tags_are_detected_and_stripped():
    message = parse_text(
        "hi" + WHITESPACE_BASE + WHITESPACE_V2 + WHITESPACE_V3 + " there"
    )
    assert message == PlainText(text="hi there", tag_versions=frozenset({2, 3}))
    assert parse_text("plain") == PlainText(text="plain")


UNKNOWN_VERSION = "\t\t\t\t \t \t"  # 8 spaces and tabs, no version xfer knows


@pytest.mark.parametrize(
    ("text", "plain", "versions"),
    [
        ("hi" + WHITESPACE_BASE + WHITESPACE_V3, "hi", {3}),
        (WHITESPACE_BASE + WHITESPACE_V2 + "hello", "hello", {2}),
        # As libotr reads it: every group of 8 spaces and tabs is part of
        # the tag, known or not.
        ("a" + WHITESPACE_BASE + UNKNOWN_VERSION + WHITESPACE_V3 + "b", "ab", {3}),
        ("a" + WHITESPACE_BASE + WHITESPACE_V2 + "   ", "a   ", {2}),
        ("a" + WHITESPACE_BASE + "b", "ab", set()),
    ],
)
def test_whitespace_tags_as_libotr_reads_them(text, plain, versions):
    assert parse_text(text) == PlainText(text=plain, tag_versions=frozenset(versions))


def _old(version: int, kind: int, body: bytes = b"") -> str:
    raw = version.to_bytes(2, "big") + bytes([kind]) + body
    return "?OTR:" + base64.b64encode(raw).decode() + "."


def test_encoded_messages_of_older_versions_are_named_not_parsed():
    commit = _old(2, 0x02, encode_data(b"g" * 192) + encode_data(b"h" * 32))
    assert commit.startswith("?OTR:AAIC")  # as libotr recognises it
    assert parse_text(commit) == OldEncoded(version=2, kind=0x02)
    assert parse_text(commit).starts_ake
    assert not parse_text(_old(2, 0x03, b"junk")).starts_ake  # v2 data
    assert parse_text(_old(1, 0x0A)) == OldEncoded(version=1, kind=0x0A)
    assert parse_text(_old(1, 0x0A)).starts_ake
    assert parse_text("?OTR:AAIC") == OldEncoded(version=2, kind=0x02)
    with pytest.raises(RemoteProtocolError, match="version 2"):
        parse_encoded(commit)  # only parse_text tells old versions apart
    with pytest.raises(RemoteProtocolError, match="version 4"):
        parse_text(_old(4, 0x02))
    with pytest.raises(RemoteProtocolError):
        parse_text("?OTR:A!")


def test_error_messages():
    assert parse_text("?OTR Error: You sent junk") == ErrorMessage(text="You sent junk")


def _roundtrip(message):
    text = message.encode()
    assert text.startswith("?OTR:")
    assert text.endswith(".")
    assert parse_encoded(text) == message


def test_every_encoded_message_round_trips():
    tags = {"sender_tag": 0x100, "receiver_tag": 0xFFFFFFFF}
    _roundtrip(DHCommit(**tags, encrypted_gx=b"\x00" * 196, hashed_gx=b"\x01" * 32))
    _roundtrip(DHKey(**tags, gy=2**1535 + 12345))
    _roundtrip(
        RevealSignature(
            **tags, revealed_key=b"k" * 16, encrypted_signature=b"s" * 80, mac=b"m" * 20
        )
    )
    _roundtrip(Signature(**tags, encrypted_signature=b"s" * 80, mac=b"m" * 20))
    _roundtrip(
        DataMessage(
            **tags,
            flags=1,
            sender_keyid=1,
            recipient_keyid=2,
            next_dh=12345,
            ctr=b"\x00" * 7 + b"\x01",
            encrypted=b"e" * 10,
            mac=b"m" * 20,
            old_mac_keys=b"o" * 40,
        )
    )


def _encoded(raw: bytes) -> str:
    return "?OTR:" + base64.b64encode(raw).decode() + "."


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("?OTR:not base64!.", "base64"),
        ("?OTR:AAMC", "final"),
        (_encoded(b"\x00\x04\x02" + b"\x00\x00\x01\x00" * 2), "version"),
        (_encoded(b"\x00\x03\x77" + b"\x00\x00\x01\x00" * 2), "type"),
        (
            _encoded(b"\x00\x03\x0a" + b"\x00\x00\x00\xff" + b"\x00\x00\x01\x00"),
            "sender",
        ),
        (
            _encoded(b"\x00\x03\x0a" + b"\x00\x00\x01\x00" + b"\x00\x00\x00\x05"),
            "receiver",
        ),
        (
            _encoded(
                b"\x00\x03\x0a" + b"\x00\x00\x01\x00" * 2 + b"\x00\x00\x00\x09\x01"
            ),
            "truncated",
        ),
        (
            _encoded(b"\x00\x03\x0a" + b"\x00\x00\x01\x00" * 2 + encode_mpi(5) + b"!"),
            "trailing",
        ),
        (
            _encoded(
                b"\x00\x03\x02"
                + b"\x00\x00\x01\x00" * 2
                + encode_data(b"x")
                + encode_data(b"short")
            ),
            "32 bytes",
        ),
    ],
)
def test_malformed_encoded_messages(text, match):
    with pytest.raises(RemoteProtocolError, match=match):
        parse_text(text)


def test_fragments_round_trip_at_every_size():
    message = DHKey(sender_tag=0x101, receiver_tag=0x202, gy=2**1000 + 7).encode()
    for size in range(FRAGMENT_OVERHEAD + 1, len(message) + 2):
        pieces = fragment(message, size, sender_tag=0x101, receiver_tag=0x202)
        assert all(len(p) <= size for p in pieces)
        if len(pieces) == 1:
            assert pieces == [message]
            continue
        r = Reassembler()
        results = [r.add(parse_fragment(p)) for p in pieces]
        assert results[:-1] == [None] * (len(pieces) - 1)
        assert results[-1] == message


def test_fragment_format_matches_libotr():
    (first, *_) = fragment(
        "?OTR:" + "A" * 100 + ".", 60, sender_tag=0x17882503, receiver_tag=0x0D75C47F
    )
    assert first.startswith("?OTR|17882503|0d75c47f,00001,00005,?OTR:")
    assert first.endswith(",")
    f = parse_fragment("?OTR|1|2,1,2,abc,")  # no leading zeros: still fine
    assert (f.sender_tag, f.receiver_tag, f.index, f.count, f.piece) == (
        1,
        2,
        1,
        2,
        "abc",
    )


@pytest.mark.parametrize(
    "text",
    [
        "?OTR|00000100|00000200,00000,00001,x,",  # k = 0
        "?OTR|00000100|00000200,00003,00002,x,",  # k > n
        "?OTR|00000100|00000200,00001,00002,,",  # empty piece
        "?OTR|00000100|00000200,00001,00002,x",  # no trailing comma
        "?OTR|zz|00000200,00001,00002,x,",
        "?OTR|00000100|00000200,00001,70000,x,",
    ],
)
def test_malformed_fragments(text):
    with pytest.raises(RemoteProtocolError):
        parse_fragment(text)


def test_out_of_order_fragments_reset_and_limits_hold():
    pieces = fragment(
        "?OTR:" + "B" * 300 + ".", 80, sender_tag=0x100, receiver_tag=0x100
    )
    r = Reassembler()
    assert r.add(parse_fragment(pieces[0])) is None
    assert r.add(parse_fragment(pieces[2])) is None  # skipped one: dropped
    assert r.add(parse_fragment(pieces[1])) is None  # no longer continues anything
    small = Reassembler(max_size=100)
    for p in pieces[:2]:
        assert small.add(parse_fragment(p)) is None
    with pytest.raises(RemoteProtocolError, match="too long"):
        small.add(parse_fragment(pieces[2]))
    with pytest.raises(LocalProtocolError):
        fragment(
            "?OTR:" + "x" * 100 + ".", FRAGMENT_OVERHEAD, sender_tag=1, receiver_tag=1
        )
