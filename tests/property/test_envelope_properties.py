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


# Format version 2: flushed short chunks. The same invariant, with release
# points at every chunk end (flushed ones included), not only at multiples of
# the chunk size.

V2_CHUNK = 1024


@st.composite
def v2_streams(draw: st.DrawFn, suite: Suite | None = None, salt: bytes = SALT):
    """A plaintext written in random pieces with random flushes, sealed in
    version 2; returns (plaintext, sealed, chunk ends in the plaintext)."""
    suite = draw(suites) if suite is None else suite
    pieces = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2 * V2_CHUNK + 50) | st.integers(0, 20), st.booleans()
            ),
            max_size=8,
        )
    )
    sealer = sealer_from_parts(
        KEY, salt=salt, transfer_id=TID, suite=suite, chunk_size=V2_CHUNK, version=2
    )
    plaintext = b""
    sealed = b""
    lengths = []  # of the chunks, as the sealer should cut them
    for n, flush in pieces:
        lengths += [V2_CHUNK] * ((sealer.buffered + n) // V2_CHUNK)
        data = os.urandom(n)
        sealed += sealer.update(data)
        plaintext += data
        if flush and sealer.buffered:
            lengths.append(sealer.buffered)
            sealed += sealer.flush()
    lengths.append(sealer.buffered)
    sealed += sealer.finalize()
    _, chunks = v2_chunks(sealed)
    assert [len(c) - 4 - TAG_SIZE for c in chunks] == lengths
    return plaintext, sealed, list(itertools.accumulate([0, *lengths]))


def v2_chunks(sealed: bytes) -> tuple[bytes, list[bytes]]:
    body = sealed[HEADER_SIZE:]
    out = []
    while body:
        n = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
        out.append(body[: 4 + n + TAG_SIZE])
        body = body[4 + n + TAG_SIZE :]
    return sealed[:HEADER_SIZE], out


def open_v2_guarded(sealed: bytes, original: bytes, ends: list[int], cuts) -> bool:
    """Open in pieces; on rejection, check that what came out is the
    original up to a chunk end. True if it opened (to the original)."""
    opener = Opener(KEY)
    released = b""
    try:
        for piece in splits(sealed, cuts):
            released += opener.update(piece)
        released += opener.finalize()
    except (IntegrityError, EnvelopeFormatError):
        assert original.startswith(released)
        assert len(released) in ends
        assert opener.released == len(released)
        return False
    assert released == original
    assert opener.finished
    return True


@given(stream=v2_streams(), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_v2_round_trip_with_random_flushes_and_splits(stream, cuts):
    plaintext, sealed, ends = stream
    assert open_v2_guarded(sealed, plaintext, ends, cuts)


@given(stream=v2_streams(), at=st.integers(0, 10**9), xor=st.integers(1, 255))
def test_v2_any_byte_change_is_rejected(stream, at, xor):
    plaintext, sealed, ends = stream
    tampered = bytearray(sealed)
    tampered[at % len(sealed)] ^= xor
    assert not open_v2_guarded(bytes(tampered), plaintext, ends, [at])


@given(stream=v2_streams(), cut=st.integers(0, 10**9), split=st.integers(0, 10**9))
def test_v2_truncation_at_any_byte_is_rejected(stream, cut, split):
    plaintext, sealed, ends = stream
    assert not open_v2_guarded(sealed[: cut % len(sealed)], plaintext, ends, [split])


@given(stream=v2_streams(), extra=st.binary(min_size=1, max_size=60))
def test_v2_bytes_after_the_final_chunk_are_rejected(stream, extra):
    plaintext, sealed, ends = stream
    assert not open_v2_guarded(sealed + extra, plaintext, ends, [len(sealed)])


@given(stream=v2_streams(), data=st.data())
def test_v2_reordering_duplicating_or_dropping_chunks_is_rejected(stream, data):
    plaintext, sealed, ends = stream
    header, chunks = v2_chunks(sealed)
    indices = list(range(len(chunks)))
    new = data.draw(st.lists(st.sampled_from(indices), max_size=len(chunks) + 2))
    rebuilt = header + b"".join(chunks[i] for i in new)
    assume(rebuilt != sealed)
    assert not open_v2_guarded(rebuilt, plaintext, ends, [])


@given(
    stream=v2_streams(suite=Suite(1)),
    other=v2_streams(Suite(1), bytes(32)),
    data=st.data(),
)
def test_v2_a_chunk_from_another_stream_is_rejected(stream, other, data):
    plaintext, sealed, ends = stream
    header, chunks = v2_chunks(sealed)
    _, foreign = v2_chunks(other[1])
    i = data.draw(st.integers(0, len(chunks) - 1))
    j = data.draw(st.integers(0, len(foreign) - 1))
    chunks[i] = foreign[j]
    assert not open_v2_guarded(header + b"".join(chunks), plaintext, ends, [])


@given(n=st.integers(0, 5000), data=st.data())
def test_chunks_never_cross_between_versions(n, data):
    """The same plaintext under the same key, salt and transfer id in both
    versions: a v1 chunk (with a word in front) in the v2 stream, a v2 chunk
    (without its word) in the v1 stream, or one stream's header on the
    other's chunks never opens."""
    plaintext = os.urandom(n)
    v1 = seal_from_parts(KEY, plaintext, salt=SALT, transfer_id=TID, chunk_size=1024)
    v2 = seal_from_parts(
        KEY, plaintext, salt=SALT, transfer_id=TID, chunk_size=1024, version=2
    )
    header1, chunks1 = _chunks(v1)
    header2, chunks2 = v2_chunks(v2)
    assert len(chunks1) == len(chunks2)
    i = data.draw(st.integers(0, len(chunks1) - 1))
    ends = [*range(0, n + 1, 1024), n]
    framed = len(chunks1[i]) - TAG_SIZE | (0 if i < len(chunks1) - 1 else 1 << 31)
    into_v2 = [*chunks2]
    into_v2[i] = framed.to_bytes(4, "big") + chunks1[i]
    assert not open_v2_guarded(header2 + b"".join(into_v2), plaintext, ends, [])
    into_v1 = [*chunks1]
    into_v1[i] = chunks2[i][4:]
    assert open_guarded(KEY, header1 + b"".join(into_v1), plaintext) is None
    assert open_guarded(KEY, header1 + v2[HEADER_SIZE:], plaintext) is None
    assert not open_v2_guarded(header2 + v1[HEADER_SIZE:], plaintext, ends, [])


@given(garbage=st.binary(max_size=3000))
def test_arbitrary_bytes_after_a_v2_header_never_open(garbage):
    header = seal_from_parts(
        KEY, b"", salt=SALT, transfer_id=TID, chunk_size=1024, version=2
    )[:HEADER_SIZE]
    opener = Opener(KEY)
    try:
        released = opener.update(header + garbage)
        opener.finalize()
    except (IntegrityError, EnvelopeFormatError):
        return
    raise AssertionError(f"garbage opened to {released!r}")
