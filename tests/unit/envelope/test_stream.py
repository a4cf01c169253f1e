"""Cutting sealed streams into chunks: the version 2 framing (chunk words),
as the Opener reads it (spec section 5, steps 8 and 9)."""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from xfer.envelope import HEADER_SIZE, TAG_SIZE, Opener
from xfer.envelope._parts import sealer_from_parts
from xfer.envelope.format import FINAL_BIT
from xfer.errors import EnvelopeFormatError, IntegrityError

KEY = bytes(range(32))
SALT = bytes(range(32, 64))
TID = bytes(range(64, 80))


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(3) as executor:
        yield executor


def sealed_v2(lengths, chunk_size=1024):
    """A version 2 stream whose chunks hold ``lengths`` bytes (the last is
    the final chunk, shorter than ``chunk_size``); and the chunk ends'
    offsets in it."""
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, chunk_size=chunk_size, version=2
    )
    data = os.urandom(sum(lengths))
    out = b""
    at = 0
    for n in lengths[:-1]:
        out += sealer.update(data[at : at + n])
        at += n
        if n < chunk_size:
            out += sealer.flush()
    out += sealer.update(data[at:]) + sealer.finalize()
    ends = list(
        itertools.accumulate([HEADER_SIZE] + [4 + n + TAG_SIZE for n in lengths])
    )
    return data, out, ends[1:]


def test_each_chunk_is_released_with_its_last_byte_and_not_before():
    lengths = [1024, 1, 300, 1024, 1024, 2, 0]
    data, sealed, ends = sealed_v2(lengths)
    assert len(sealed) == ends[-1]
    opener = Opener(KEY)
    released_at = []
    out = b""
    for i in range(len(sealed)):
        got = opener.update(sealed[i : i + 1])
        if got or (i + 1 == len(sealed)):
            released_at.append(i + 1)
        out += got
    expected = [end for end, n in zip(ends, lengths, strict=True) if n] + [ends[-1]]
    assert released_at == expected
    assert opener.finished
    assert out + opener.finalize() == data


@pytest.mark.parametrize("word", [1025, 0, 2**31 - 1, FINAL_BIT | 1025, 1 << 24])
def test_a_bad_word_fails_before_its_chunk_arrives(word):
    _, sealed, ends = sealed_v2([1024, 10])
    opener = Opener(KEY)
    assert len(opener.update(sealed[: ends[0]])) == 1024
    with pytest.raises(EnvelopeFormatError):
        opener.update(word.to_bytes(4, "big"))


def test_the_opener_buffers_at_most_one_chunk_before_verifying_it():
    """A word announcing a full chunk followed by endless garbage: the tag
    check comes when 4 + chunk_size + 32 bytes are there, never later."""
    _, sealed, _ = sealed_v2([5])
    opener = Opener(KEY)
    opener.update(sealed[:HEADER_SIZE] + (1024).to_bytes(4, "big"))
    for i in range(1024 + TAG_SIZE - 1):
        assert opener.update(b"\x55") == b"", i
    with pytest.raises(IntegrityError):
        opener.update(b"\x55")


@pytest.mark.parametrize("workers", [2, 3])
def test_runs_of_full_chunks_fan_out_around_flushed_ones(pool, workers):
    lengths = [4096] * 20 + [17] + [4096] * 9 + [1] + [4096] * 3 + [100]
    data, sealed, _ = sealed_v2(lengths, chunk_size=4096)
    opener = Opener(KEY, executor=pool, workers=workers)
    assert opener.update(sealed) == data
    assert opener.finished


def test_a_bad_chunk_inside_a_parallel_run_releases_nothing(pool):
    lengths = [1024] * 40 + [3, 0]
    _, sealed, ends = sealed_v2(lengths)
    bad = bytearray(sealed)
    bad[ends[29] + 10] ^= 1  # in chunk 30, in the second half of the run
    opener = Opener(KEY, executor=pool, workers=2)
    with pytest.raises(IntegrityError):
        opener.update(bad)
    assert opener.released == 0


@pytest.mark.parametrize("step", [1, 3, 4, 5, 37, 1000, 1061, 4096])
def test_any_split_of_a_v2_stream_opens_the_same(step):
    lengths = [1024, 7, 1024, 1024, 1, 1, 1, 500, 1024, 0]
    data, sealed, _ = sealed_v2(lengths)
    opener = Opener(KEY)
    out = b"".join(
        opener.update(sealed[i : i + step]) for i in range(0, len(sealed), step)
    )
    assert out + opener.finalize() == data
