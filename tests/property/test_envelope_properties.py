"""Properties of the envelope over generated inputs (Hypothesis).

The invariant behind every attack test: whatever is done to a sealed stream,
the opener either returns exactly the original plaintext, or raises
IntegrityError / EnvelopeFormatError - and everything it released before
raising is a prefix of the original plaintext made of whole verified chunks.
"""

from __future__ import annotations

import itertools
import os

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xfer.envelope import (
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    Opener,
    Suite,
)
from xfer.envelope._parts import seal_from_parts, sealer_from_parts
from xfer.errors import EnvelopeFormatError, IntegrityError

KEY = bytes(range(32))
SALT = bytes(range(32, 64))
TID = bytes(range(64, 80))

suites = st.sampled_from(list(Suite))
# Small chunk sizes keep examples fast; a few large ones check the bounds.
chunk_sizes = st.one_of(
    st.integers(MIN_CHUNK_SIZE, 3000),
    st.sampled_from([4096, 64511, 65536, MAX_CHUNK_SIZE]),
)


@st.composite
def plaintexts(draw: st.DrawFn, chunk_size: int) -> bytes:
    """Lengths around chunk multiples (0 and exact multiples included)."""
    chunks = draw(st.integers(0, 4))
    delta = draw(st.sampled_from([0, 0, 1, -1, 7]) | st.integers(0, chunk_size - 1))
    n = max(0, min(chunks * chunk_size + delta, 5 * 4096 + 17))
    return os.urandom(n)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def open_guarded(key: bytes, sealed: bytes, original: bytes, **kwargs) -> bytes | None:
    """Open; on rejection check only verified whole chunks were released."""
    opener = Opener(key, **kwargs)
    released = b""
    try:
        for piece in splits(sealed, [len(sealed) // 3, len(sealed) // 2]):
            released += opener.update(piece)
        released += opener.finalize()
    except (IntegrityError, EnvelopeFormatError):
        assert original.startswith(released)
        header = opener.header
        if header is not None:
            assert len(released) % header.chunk_size == 0
        return None
    return released


@given(
    suite=suites,
    chunk_size=chunk_sizes,
    data=st.data(),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
)
def test_round_trip_for_any_length_and_any_split(suite, chunk_size, data, cuts):
    plaintext = data.draw(plaintexts(chunk_size))
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, suite=suite, chunk_size=chunk_size
    )
    sealed = (
        b"".join(sealer.update(p) for p in splits(plaintext, cuts)) + sealer.finalize()
    )
    assert len(sealed) == sealer.header.sealed_size(len(plaintext))
    assert sealed == seal_from_parts(
        KEY, plaintext, salt=SALT, transfer_id=TID, suite=suite, chunk_size=chunk_size
    )
    opener = Opener(KEY)
    opened = (
        b"".join(opener.update(p) for p in splits(sealed, cuts)) + opener.finalize()
    )
    assert opened == plaintext


def _sealed(
    n: int,
    chunk_size: int = 1024,
    suite: Suite = Suite.AES256_CTR_HMAC_SHA512,
    salt: bytes = SALT,
):
    plaintext = os.urandom(n)
    return plaintext, seal_from_parts(
        KEY, plaintext, salt=salt, transfer_id=TID, suite=suite, chunk_size=chunk_size
    )


@given(n=st.integers(0, 4000), suite=suites, bit=st.integers(0, 10**9))
def test_every_single_bit_flip_is_rejected(n, suite, bit):
    plaintext, sealed = _sealed(n, suite=suite)
    pos = bit % (len(sealed) * 8)
    tampered = bytearray(sealed)
    tampered[pos // 8] ^= 1 << (pos % 8)
    assert open_guarded(KEY, bytes(tampered), plaintext) is None


@given(n=st.integers(0, 4000), cut=st.integers(0, 10**9))
def test_truncation_at_any_byte_is_rejected(n, cut):
    plaintext, sealed = _sealed(n)
    at = cut % len(sealed)  # strictly shorter than the stream
    assert open_guarded(KEY, sealed[:at], plaintext) is None


@given(n=st.integers(1, 400), extra=st.binary(min_size=1, max_size=40))
def test_appended_bytes_are_rejected(n, extra):
    plaintext, sealed = _sealed(n * 10)
    assert open_guarded(KEY, sealed + extra, plaintext) is None


def _chunks(sealed: bytes, chunk_size: int = 1024) -> tuple[bytes, list[bytes]]:
    step = chunk_size + TAG_SIZE
    body = sealed[HEADER_SIZE:]
    return sealed[:HEADER_SIZE], [body[i : i + step] for i in range(0, len(body), step)]


@given(n=st.integers(1024, 6000), data=st.data())
def test_reordering_duplicating_or_dropping_chunks_is_rejected(n, data):
    plaintext, sealed = _sealed(n)
    header, chunks = _chunks(sealed)
    indices = list(range(len(chunks)))
    new = data.draw(
        st.lists(st.sampled_from(indices), min_size=0, max_size=len(chunks) + 2)
    )
    assume(new != indices)
    assert (
        open_guarded(KEY, header + b"".join(chunks[i] for i in new), plaintext) is None
    )


@given(n=st.integers(1024, 6000), data=st.data())
def test_splicing_a_chunk_from_another_transfer_is_rejected(n, data):
    plaintext, sealed = _sealed(n)
    other_plain = os.urandom(n)
    other = seal_from_parts(
        KEY, other_plain, salt=bytes(32), transfer_id=TID, chunk_size=1024
    )
    header, chunks = _chunks(sealed)
    _, foreign = _chunks(other)
    i = data.draw(st.integers(0, len(chunks) - 1))
    chunks[i] = foreign[i]
    assert open_guarded(KEY, header + b"".join(chunks), plaintext) is None


@given(n=st.integers(0, 3000), key=st.binary(min_size=32, max_size=32))
@settings(max_examples=30)
def test_a_wrong_key_is_rejected(n, key):
    assume(key != KEY)
    plaintext, sealed = _sealed(n)
    assert open_guarded(key, sealed, plaintext) is None


@given(garbage=st.binary(max_size=3000))
def test_arbitrary_bytes_never_open(garbage):
    opener = Opener(KEY)
    try:
        released = opener.update(garbage)
        opener.finalize()
    except (IntegrityError, EnvelopeFormatError):
        return
    raise AssertionError(f"garbage opened to {released!r}")
