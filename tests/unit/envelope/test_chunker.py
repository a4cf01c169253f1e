from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from xfer.envelope import (
    HEADER_SIZE,
    TAG_SIZE,
    EnvelopeHeader,
    Opener,
    Sealer,
    Suite,
    derive_keys,
    open_chunk,
    seal_chunk,
)
from xfer.envelope._parts import seal_from_parts, sealer_from_parts
from xfer.envelope.chunk import _tag
from xfer.envelope.format import MAX_CHUNKS
from xfer.errors import (
    AlreadyFinalized,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
)

KEY = bytes(range(32))
SALT = bytes(range(32, 64))
TID = bytes(range(64, 80))


def open_all(key: bytes, sealed: bytes, **kwargs) -> bytes:
    opener = Opener(key, **kwargs)
    return opener.update(sealed) + opener.finalize()


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(3) as executor:
        yield executor


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 3 * 4096, 10_000])
def test_round_trip(suite, n):
    data = os.urandom(n)
    sealer = Sealer(KEY, suite=suite, chunk_size=4096)
    sealed = sealer.update(data) + sealer.finalize()
    assert len(sealed) == sealer.header.sealed_size(n)
    assert open_all(KEY, sealed) == data


def test_empty_plaintext_is_a_header_and_one_empty_final_chunk():
    sealed = seal_from_parts(KEY, b"", salt=SALT, transfer_id=TID, chunk_size=1024)
    assert len(sealed) == HEADER_SIZE + TAG_SIZE
    assert open_all(KEY, sealed) == b""


def test_an_exact_multiple_ends_with_an_empty_final_chunk():
    sealed = seal_from_parts(
        KEY, bytes(2048), salt=SALT, transfer_id=TID, chunk_size=1024
    )
    assert len(sealed) == HEADER_SIZE + 2 * (1024 + TAG_SIZE) + TAG_SIZE


def test_fresh_salt_and_transfer_id_every_time():
    a, b = Sealer(KEY), Sealer(KEY)
    assert a.header.salt != b.header.salt
    assert a.header.transfer_id != b.header.transfer_id
    sealed_a = a.update(b"same") + a.finalize()
    sealed_b = b.update(b"same") + b.finalize()
    assert sealed_a[HEADER_SIZE:] != sealed_b[HEADER_SIZE:]


def test_deterministic_seam_is_deterministic():
    one = seal_from_parts(KEY, b"x" * 5000, salt=SALT, transfer_id=TID, chunk_size=1024)
    two = seal_from_parts(KEY, b"x" * 5000, salt=SALT, transfer_id=TID, chunk_size=1024)
    assert one == two


def test_cryptocat_chunk_size_is_accepted():
    data = os.urandom(3 * 64511 + 17)
    sealer = Sealer(KEY, chunk_size=64511)
    assert open_all(KEY, sealer.update(data) + sealer.finalize()) == data


@pytest.mark.parametrize("chunk_size", [1024, 1500, 4096, 64511])
def test_streaming_equals_chunk_by_chunk(chunk_size):
    """Chunk i can be sealed and opened on its own: its counter follows from i."""
    data = os.urandom(3 * chunk_size + 99)
    sealer = sealer_from_parts(KEY, salt=SALT, transfer_id=TID, chunk_size=chunk_size)
    streamed = sealer.update(data) + sealer.finalize()
    keys = derive_keys(KEY, sealer.header)
    pieces = [keys.header_bytes]
    for i in range(3):
        pieces.append(
            seal_chunk(
                keys, i, data[i * chunk_size : (i + 1) * chunk_size], final=False
            )
        )
    pieces.append(seal_chunk(keys, 3, data[3 * chunk_size :], final=True))
    assert b"".join(pieces) == streamed
    # And any single chunk opens on its own, in any order.
    wire = chunk_size + TAG_SIZE
    body = streamed[HEADER_SIZE:]
    assert (
        open_chunk(keys, 2, body[2 * wire : 3 * wire], final=False)
        == data[2 * chunk_size : 3 * chunk_size]
    )
    assert open_chunk(keys, 3, body[3 * wire :], final=True) == data[3 * chunk_size :]
    with pytest.raises(IntegrityError):
        open_chunk(keys, 1, body[2 * wire : 3 * wire], final=False)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 3, body[3 * wire :], final=False)


def test_seal_chunk_checks_the_chunk_shape():
    keys = derive_keys(
        KEY,
        EnvelopeHeader(suite=Suite(1), chunk_size=1024, salt=SALT, transfer_id=TID),
    )
    with pytest.raises(LocalProtocolError):
        seal_chunk(keys, 0, bytes(1023), final=False)
    with pytest.raises(LocalProtocolError):
        seal_chunk(keys, 0, bytes(1024), final=True)
    with pytest.raises(LocalProtocolError):
        seal_chunk(keys, -1, bytes(1024), final=False)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("n", [0, 5000, 64 * 1024 + 1, 1_000_000])
def test_parallel_output_equals_sequential(pool, workers, n):
    data = os.urandom(n)
    seq = sealer_from_parts(KEY, salt=SALT, transfer_id=TID, chunk_size=4096)
    expected = seq.update(data) + seq.finalize()
    par = sealer_from_parts(KEY, salt=SALT, transfer_id=TID, chunk_size=4096)
    par._executor, par._workers = pool, workers  # the seam does not take a pool
    # Uneven pieces, so that the pending partial chunk and the fan-out mix.
    got = b""
    for i in range(0, n, 77_777):
        got += par.update(data[i : i + 77_777])
    got += par.finalize()
    assert got == expected
    opener = Opener(KEY, executor=pool, workers=workers)
    assert opener.update(expected) + opener.finalize() == data


def test_parallel_open_rejects_a_bad_chunk_in_any_run(pool):
    data = os.urandom(40 * 1024)
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = bytearray(sealer.update(data) + sealer.finalize())
    sealed[HEADER_SIZE + 30 * (1024 + TAG_SIZE) + 5] ^= 1  # in the second run
    opener = Opener(KEY, executor=pool, workers=2)
    with pytest.raises(IntegrityError):
        opener.update(sealed)


def test_opener_releases_each_chunk_as_soon_as_it_verifies():
    data = os.urandom(3000)
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = sealer.update(data) + sealer.finalize()
    opener = Opener(KEY)
    first = opener.update(sealed[: HEADER_SIZE + 1024 + TAG_SIZE - 1])
    assert first == b""  # one byte short of the first chunk
    assert opener.update(sealed[HEADER_SIZE + 1024 + TAG_SIZE - 1 : -1]) == data[:2048]
    assert opener.update(sealed[-1:]) == b""  # the final chunk waits for finalize
    assert opener.finalize() == data[2048:]


def test_opener_releases_nothing_from_a_bad_chunk():
    data = os.urandom(3000)
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = bytearray(sealer.update(data) + sealer.finalize())
    sealed[HEADER_SIZE + 1024 + TAG_SIZE + 10] ^= 0x80  # chunk 1
    opener = Opener(KEY)
    assert opener.update(sealed[: HEADER_SIZE + 1024 + TAG_SIZE]) == data[:1024]
    with pytest.raises(IntegrityError):
        opener.update(sealed[HEADER_SIZE + 1024 + TAG_SIZE :])


def test_header_is_parsed_a_byte_at_a_time():
    sealer = Sealer(KEY, chunk_size=2048, suite=Suite.AES256_CTR_HMAC_SHA256)
    sealed = sealer.update(b"abc" * 1000) + sealer.finalize()
    opener = Opener(KEY)
    out = b""
    for i in range(len(sealed)):
        if i < HEADER_SIZE:
            assert opener.header is None
        out += opener.update(sealed[i : i + 1])
    assert opener.header == sealer.header
    assert out + opener.finalize() == b"abc" * 1000


def test_contexts_are_single_use():
    sealer = Sealer(KEY)
    sealer.finalize()
    with pytest.raises(AlreadyFinalized):
        sealer.update(b"more")
    with pytest.raises(AlreadyFinalized):
        sealer.finalize()
    opener = Opener(KEY)
    with pytest.raises(EnvelopeFormatError):
        opener.finalize()
    with pytest.raises(AlreadyFinalized):
        opener.update(b"x")


def test_an_opener_that_failed_stays_failed():
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = bytearray(sealer.update(bytes(5000)) + sealer.finalize())
    sealed[HEADER_SIZE] ^= 1
    opener = Opener(KEY)
    with pytest.raises(IntegrityError):
        opener.update(sealed)
    with pytest.raises(AlreadyFinalized):
        opener.update(b"")
    with pytest.raises(AlreadyFinalized):
        opener.finalize()


def test_wrong_key_and_foreign_transfer_id_are_integrity_errors():
    sealer = Sealer(KEY, transfer_id=TID)
    sealed = sealer.update(b"secret") + sealer.finalize()
    with pytest.raises(IntegrityError):
        open_all(bytes(32), sealed)
    with pytest.raises(IntegrityError):
        open_all(KEY, sealed, transfer_id=bytes(16))
    assert open_all(KEY, sealed, transfer_id=TID) == b"secret"


def test_openers_refuse_oversized_chunks_before_buffering():
    sealer = Sealer(KEY, chunk_size=1 << 20)
    sealed = sealer.update(b"x") + sealer.finalize()
    with pytest.raises(EnvelopeFormatError, match="chunk size"):
        Opener(KEY, max_chunk_size=1 << 16).update(sealed)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_material_must_be_32_bytes(size):
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        Sealer(bytes(size))
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        Opener(bytes(size))


def test_bad_parameters_are_local_errors():
    with pytest.raises(LocalProtocolError):
        Sealer(KEY, chunk_size=100)
    with pytest.raises(LocalProtocolError):
        Sealer(KEY, transfer_id=b"short")
    with pytest.raises(LocalProtocolError):
        Sealer(KEY, workers=0)


def test_update_into_writes_exactly_output_bound_bytes():
    sealer = Sealer(KEY, chunk_size=1024)
    buf = bytearray(10_000)
    for n in [0, 10, 1014, 1024, 5000]:
        bound = sealer.output_bound(n)
        assert sealer.update_into(bytes(n), buf) == bound
    with pytest.raises(LocalProtocolError, match="too small"):
        sealer.update_into(bytes(4096), bytearray(100))


def test_update_into_rejects_a_small_buffer_for_the_opener():
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = sealer.update(bytes(4000)) + sealer.finalize()
    opener = Opener(KEY)
    with pytest.raises(LocalProtocolError, match="too small"):
        opener.update_into(sealed, bytearray(10))


def test_inputs_may_be_any_bytes_like():
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = (
        sealer.update(bytearray(b"a" * 700))
        + sealer.update(memoryview(b"b" * 700))
        + sealer.finalize()
    )
    assert open_all(KEY, memoryview(sealed)) == b"a" * 700 + b"b" * 700


def test_an_integer_suite_seals_what_it_says():
    sealer = Sealer(KEY, suite=1)
    sealed = sealer.update(b"x" * 100) + sealer.finalize()
    assert sealed[5] == 1
    assert open_all(KEY, sealed) == b"x" * 100


# Format version 2: flushed short chunks.


def seal_v2(pieces, *, flush_after=None, chunk_size=1024, **kwargs):
    """Seal ``pieces`` in version 2, flushing after the pieces whose indices
    are in ``flush_after`` (all of them by default)."""
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, chunk_size=chunk_size, version=2, **kwargs
    )
    out = b""
    for i, piece in enumerate(pieces):
        out += sealer.update(piece)
        if flush_after is None or i in flush_after:
            out += sealer.flush()
    return out + sealer.finalize()


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("chunk_size", [1024, 1500])
def test_v2_round_trip_with_flushes(suite, chunk_size):
    pieces = [os.urandom(n) for n in (1, 100, 3000, 0, 1499, 1500, 7)]
    sealed = seal_v2(pieces, chunk_size=chunk_size, suite=suite)
    assert sealed[4] == 2
    assert open_all(KEY, sealed) == b"".join(pieces)


def test_v2_without_flushes_is_v1_cut_with_words():
    data = os.urandom(5000)
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, chunk_size=1024, version=2
    )
    sealed = sealer.update(data) + sealer.finalize()
    assert len(sealed) == sealer.header.sealed_size(5000) == HEADER_SIZE + 5000 + 5 * 36
    assert open_all(KEY, sealed) == data


def test_flush_is_for_version_2_only():
    sealer = Sealer(KEY)
    head = sealer.update(b"abc")
    with pytest.raises(LocalProtocolError, match="version 2"):
        sealer.flush()
    # The version 1 sealer is unharmed by the refused flush.
    assert open_all(KEY, head + sealer.finalize()) == b"abc"


def test_flush_seals_what_is_buffered_and_nothing_else():
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, chunk_size=1024, version=2
    )
    assert sealer.buffered == 0
    assert sealer.flush() == b""  # nothing buffered: not even the header yet
    assert sealer.update(b"x" * 1500) != b""  # the header and one full chunk
    assert sealer.buffered == 476
    chunk = sealer.flush()
    assert len(chunk) == 4 + 476 + TAG_SIZE  # the header went out already
    assert sealer.buffered == 0
    assert sealer.flush() == b""
    first = Sealer(KEY, chunk_size=1024, version=2)
    assert first.update(b"hi") == first.header.pack()  # the first output
    assert len(first.flush()) == 4 + 2 + TAG_SIZE


def test_v2_update_emits_full_chunks_as_data_arrives():
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    buf = bytearray(10_000)
    for n in [0, 10, 1014, 1024, 5000, 3]:
        bound = sealer.output_bound(n)
        assert sealer.update_into(bytes(n), buf) == bound
    assert sealer.buffered == 907  # 7051 bytes so far
    assert sealer.output_bound(116) == 0
    assert sealer.output_bound(117) == 1024 + 36


def test_a_flushed_chunk_is_released_as_soon_as_it_is_whole():
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    sealed = sealer.update(b"tail -f says hi") + sealer.flush()
    opener = Opener(KEY)
    assert opener.update(sealed[:-1]) == b""  # one byte short: nothing
    assert opener.released == 0
    assert opener.update(sealed[-1:]) == b"tail -f says hi"
    assert opener.released == 15
    assert not opener.finished
    later = sealer.update(b"!") + sealer.flush()
    assert opener.update(later) == b"!"
    assert opener.update(sealer.finalize()) == b""
    assert opener.finished
    assert opener.finalize() == b""
    assert opener.released == 16


def test_the_v2_final_chunk_is_released_by_update():
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    sealed = sealer.update(b"a" * 1100) + sealer.finalize()
    opener = Opener(KEY)
    assert opener.update(sealed) == b"a" * 1100
    assert opener.finished
    assert opener.released == 1100
    assert opener.finalize() == b""


def test_v1_releases_the_final_chunk_in_finalize():
    sealer = Sealer(KEY, chunk_size=1024)
    sealed = sealer.update(b"a" * 1100) + sealer.finalize()
    opener = Opener(KEY)
    assert opener.update(sealed) == b"a" * 1024
    assert (opener.released, opener.finished) == (1024, False)
    assert opener.finalize() == b"a" * 76
    assert (opener.released, opener.finished) == (1100, True)


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 40, 4 + 100 + TAG_SIZE - 1])
def test_a_v2_stream_cut_after_a_flush_fails_finalize(cut):
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    first = sealer.update(b"x" * 1030) + sealer.flush()
    second = sealer.update(b"y" * 100) + sealer.flush()
    opener = Opener(KEY)
    assert opener.update(first + second[:cut]) == b"x" * 1030
    with pytest.raises(IntegrityError):
        opener.finalize()
    assert opener.released == 1030
    assert not opener.finished


def test_bytes_after_the_v2_final_chunk_fail():
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    sealed = sealer.update(b"data") + sealer.finalize()
    # In the same update: the final chunk is not released.
    opener = Opener(KEY)
    with pytest.raises(IntegrityError):
        opener.update(sealed + b"\0")
    assert opener.released == 0
    # In a later update: what came before stays released, the extra fails.
    opener = Opener(KEY)
    assert opener.update(sealed) == b"data"
    assert opener.update(b"") == b""
    with pytest.raises(IntegrityError):
        opener.update(b"\0")
    with pytest.raises(AlreadyFinalized):
        opener.finalize()
    # Split inside the final chunk, with the extra byte in the second half.
    opener = Opener(KEY)
    opener.update(sealed[:-5])
    with pytest.raises(IntegrityError):
        opener.update(sealed[-5:] + b"\0")


def test_v2_contexts_are_single_use():
    sealer = Sealer(KEY, version=2)
    sealer.finalize()
    with pytest.raises(AlreadyFinalized):
        sealer.flush()


def test_a_sealer_at_the_chunk_limit_can_still_end_the_stream():
    sealer = sealer_from_parts(
        KEY, salt=SALT, transfer_id=TID, chunk_size=1024, version=2
    )
    sealer._index = MAX_CHUNKS - 1  # white box: 2**32 - 1 chunks cannot be made here
    assert sealer.update(b"late") == sealer.header.pack()
    with pytest.raises(LocalProtocolError, match="out of range"):
        sealer.flush()
    sealed = sealer.finalize()
    keys = derive_keys(KEY, sealer.header)
    assert open_chunk(keys, MAX_CHUNKS - 1, sealed, final=True) == b"late"


def test_an_opener_at_the_chunk_limit_takes_only_the_final_chunk():
    header = EnvelopeHeader(
        suite=Suite(1), chunk_size=1024, salt=SALT, transfer_id=TID, version=2
    )
    keys = derive_keys(KEY, header)
    last = MAX_CHUNKS - 1
    final = seal_chunk(keys, last, b"end", final=True)
    # A chunk that is not final, tagged correctly for the last index.
    word = (3).to_bytes(4, "big")
    body = word + keys.cipher_at(last).update(b"end")
    not_final = body + _tag(keys, last, False, body)
    full_word = (1024).to_bytes(4, "big")
    body = full_word + keys.cipher_at(last).update(bytes(1024))
    full = body + _tag(keys, last, False, body)
    for chunk, expected in [(final, b"end"), (not_final, None), (full, None)]:
        opener = Opener(KEY)
        opener.update(header.pack())
        opener._index = last  # white box, as above
        if expected is None:
            with pytest.raises(IntegrityError):
                opener.update(chunk)
        else:
            assert opener.update(chunk) == expected
            assert opener.finished


@pytest.mark.parametrize("workers", [2, 3])
def test_v2_parallel_output_equals_sequential(pool, workers):
    data = os.urandom(300_000)
    pieces = [data[i : i + 77_777] for i in range(0, len(data), 77_777)]
    expected = seal_v2(pieces, chunk_size=4096)
    par = sealer_from_parts(KEY, salt=SALT, transfer_id=TID, chunk_size=4096, version=2)
    par._executor, par._workers = pool, workers  # the seam does not take a pool
    got = b""
    for piece in pieces:
        got += par.update(piece) + par.flush()
    assert got + par.finalize() == expected
    opener = Opener(KEY, executor=pool, workers=workers)
    assert opener.update(expected) + opener.finalize() == data
