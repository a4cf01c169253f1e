"""xfer's TLV 8 payloads: the offer's media type and the receiver's verdict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import make_offer
from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.transfer.offer import TransferOffer, TransferVerdict, decode_payload


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
