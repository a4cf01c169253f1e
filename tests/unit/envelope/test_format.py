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
from xfer.envelope.format import FINAL_BIT, WORD_SIZE, parse_word
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


def test_a_version_2_header_differs_in_the_version_byte_only():
    v2 = EnvelopeHeader(
        suite=HEADER.suite,
        chunk_size=HEADER.chunk_size,
        salt=HEADER.salt,
        transfer_id=HEADER.transfer_id,
        version=2,
    )
    raw = v2.pack()
    assert raw[4] == 2
    assert raw[:4] + raw[5:] == HEADER.pack()[:4] + HEADER.pack()[5:]
    assert EnvelopeHeader.parse(raw) == v2
    assert EnvelopeHeader.parse(raw) != HEADER


def test_version_2_chunks_carry_a_word_each():
    h = EnvelopeHeader(
        suite=Suite(1),
        chunk_size=1024,
        salt=bytes(32),
        transfer_id=bytes(16),
        version=2,
    )
    assert h.chunk_overhead == WORD_SIZE + TAG_SIZE == 36
    assert h.wire_chunk_size == 1024 + 36
    # Without a flush: full chunks and a final one, 36 bytes each over the data.
    assert h.sealed_size(0) == HEADER_SIZE + 36
    assert h.sealed_size(1024) == HEADER_SIZE + 1024 + 2 * 36
    assert h.sealed_size(2500) == HEADER_SIZE + 2500 + 3 * 36


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        (1, (1, False)),
        (1024, (1024, False)),
        (FINAL_BIT, (0, True)),
        (FINAL_BIT | 1024, (1024, True)),
        (FINAL_BIT | 7, (7, True)),
    ],
)
def test_parse_word_reads_the_length_and_the_final_bit(word, expected):
    assert parse_word(word, 1024) == expected


@pytest.mark.parametrize(
    ("word", "match"),
    [
        (0, "empty chunk"),
        (1025, "longer than the chunk size"),
        (FINAL_BIT | 1025, "longer than the chunk size"),
        (1 << 24 | 5, "longer than the chunk size"),  # a reserved bit set
        (FINAL_BIT - 1, "longer than the chunk size"),
        (2**32 - 1, "longer than the chunk size"),
    ],
)
def test_parse_word_rejects_what_no_valid_chunk_has(word, match):
    with pytest.raises(EnvelopeFormatError, match=match):
        parse_word(word, 1024)


def test_the_largest_chunk_size_fits_the_word():
    assert parse_word(MAX_CHUNK_SIZE, MAX_CHUNK_SIZE) == (MAX_CHUNK_SIZE, False)
    assert parse_word(FINAL_BIT | MAX_CHUNK_SIZE, MAX_CHUNK_SIZE) == (
        MAX_CHUNK_SIZE,
        True,
    )
