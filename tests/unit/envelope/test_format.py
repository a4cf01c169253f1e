from __future__ import annotations

import struct

import pytest

from xfer.envelope import (
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    EnvelopeHeader,
    Suite,
)
from xfer.errors import (
    EnvelopeFormatError,
    LocalProtocolError,
    UnsupportedSuite,
    UnsupportedVersion,
)

HEADER = EnvelopeHeader(
    suite=Suite.AES256_CTR_HMAC_SHA256,
    chunk_size=64511,
    salt=bytes(range(32)),
    transfer_id=bytes(range(100, 116)),
)


def test_header_layout_is_as_specified():
    raw = HEADER.pack()
    assert len(raw) == HEADER_SIZE == 58
    assert raw[:4] == b"XFER"
    assert raw[4] == 1
    assert raw[5] == 2
    assert struct.unpack(">I", raw[6:10]) == (64511,)
    assert raw[10:42] == bytes(range(32))
    assert raw[42:58] == bytes(range(100, 116))
    assert EnvelopeHeader.parse(raw) == HEADER


@pytest.mark.parametrize(
    ("offset", "value", "error"),
    [
        (0, ord("x"), EnvelopeFormatError),
        (4, 0, UnsupportedVersion),
        (4, 3, UnsupportedVersion),
        (5, 0, UnsupportedSuite),
        (5, 255, UnsupportedSuite),
    ],
)
def test_parse_rejects_bad_fields(offset, value, error):
    raw = bytearray(HEADER.pack())
    raw[offset] = value
    with pytest.raises(error):
        EnvelopeHeader.parse(bytes(raw))


@pytest.mark.parametrize("size", [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 2**32 - 1])
def test_parse_rejects_chunk_sizes_out_of_bounds(size):
    raw = HEADER.pack()
    raw = raw[:6] + struct.pack(">I", size) + raw[10:]
    with pytest.raises(EnvelopeFormatError, match="chunk size"):
        EnvelopeHeader.parse(raw)


def test_parse_honours_a_lower_chunk_limit():
    with pytest.raises(EnvelopeFormatError):
        EnvelopeHeader.parse(HEADER.pack(), max_chunk_size=4096)


@pytest.mark.parametrize("n", [0, 1, 57, 59])
def test_parse_rejects_wrong_lengths(n):
    with pytest.raises(EnvelopeFormatError):
        EnvelopeHeader.parse(HEADER.pack().ljust(59, b"\0")[:n])


@pytest.mark.parametrize(
    "fields",
    [
        {"chunk_size": MIN_CHUNK_SIZE - 1},
        {"chunk_size": MAX_CHUNK_SIZE + 1},
        {"salt": bytes(31)},
        {"transfer_id": bytes(17)},
        {"version": 0},
        {"version": 3},
    ],
)
def test_building_a_bad_header_is_a_local_error(fields):
    args = {
        "suite": Suite.AES256_CTR_HMAC_SHA512,
        "chunk_size": 4096,
        "salt": bytes(32),
        "transfer_id": bytes(16),
        **fields,
    }
    with pytest.raises(LocalProtocolError):
        EnvelopeHeader(**args)


def test_sealed_size_counts_the_final_chunk():
    h = EnvelopeHeader(
        suite=Suite(1), chunk_size=1024, salt=bytes(32), transfer_id=bytes(16)
    )
    assert h.sealed_size(0) == HEADER_SIZE + TAG_SIZE
    assert h.sealed_size(1023) == HEADER_SIZE + 1023 + TAG_SIZE
    assert h.sealed_size(1024) == HEADER_SIZE + 1024 + 2 * TAG_SIZE
    with pytest.raises(LocalProtocolError):
        h.sealed_size(-1)


def test_suite_labels_round_trip():
    for suite in Suite:
        assert Suite.from_label(suite.label) is suite
    with pytest.raises(LocalProtocolError, match="unknown suite"):
        Suite.from_label("rot13")


def test_a_plain_suite_id_means_the_same_suite():
    h = EnvelopeHeader(suite=1, chunk_size=1024, salt=bytes(32), transfer_id=bytes(16))
    assert h.suite is Suite.AES256_CTR_HMAC_SHA512
    with pytest.raises(LocalProtocolError, match="unknown suite"):
        EnvelopeHeader(suite=3, chunk_size=1024, salt=bytes(32), transfer_id=bytes(16))
