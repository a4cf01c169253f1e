"""confirm_sealed: a file received earlier, checked against a new offer whose
stream holds only the empty rest (header and final chunk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.adapters.aio.sealed_streams import MemoryStream, offer_for, sealed_rest
from xfer.aio.pump import confirm_sealed
from xfer.envelope import EnvelopeHeader
from xfer.errors import IntegrityError, StreamTruncated
from xfer.transfer.offer import TransferOffer

KEY = os.urandom(32)


def empty_size(offer: TransferOffer) -> int:
    return EnvelopeHeader(
        suite=1, chunk_size=4096, salt=offer.salt, transfer_id=offer.transfer_id
    ).sealed_size(0)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, TransferOffer]:
    content = os.urandom(10_000)
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    return path, offer_for(content)


async def test_the_empty_rest_and_the_same_file_confirm(stored):
    path, offer = stored
    stream = MemoryStream(sealed_rest(offer, KEY))
    await confirm_sealed(stream, KEY, offer, path, sealed_size=empty_size(offer))


async def test_a_file_changed_since_does_not_confirm(stored):
    path, offer = stored
    data = bytearray(path.read_bytes())
    data[5000] ^= 1
    path.write_bytes(data)
    stream = MemoryStream(sealed_rest(offer, KEY))
    with pytest.raises(IntegrityError):
        await confirm_sealed(stream, KEY, offer, path, sealed_size=empty_size(offer))


async def test_a_file_that_grew_does_not_confirm(stored):
    path, offer = stored
    with path.open("ab") as f:
        f.write(b"x")
    stream = MemoryStream(sealed_rest(offer, KEY))
    with pytest.raises(IntegrityError):
        await confirm_sealed(stream, KEY, offer, path, sealed_size=empty_size(offer))


async def test_another_key_does_not_confirm(stored):
    path, offer = stored
    stream = MemoryStream(sealed_rest(offer, os.urandom(32)))
    with pytest.raises(IntegrityError):
        await confirm_sealed(stream, KEY, offer, path, sealed_size=empty_size(offer))


async def test_plaintext_past_the_end_does_not_confirm(stored):
    path, offer = stored
    sealed = sealed_rest(offer, KEY, b"more")
    with pytest.raises(IntegrityError):
        await confirm_sealed(
            MemoryStream(sealed), KEY, offer, path, sealed_size=len(sealed)
        )
    with pytest.raises(IntegrityError):  # beyond the announced size, too
        await confirm_sealed(
            MemoryStream(sealed), KEY, offer, path, sealed_size=empty_size(offer)
        )


async def test_a_cut_stream_is_a_break(stored):
    path, offer = stored
    stream = MemoryStream(sealed_rest(offer, KEY)[:-1])
    with pytest.raises(StreamTruncated):
        await confirm_sealed(stream, KEY, offer, path, sealed_size=empty_size(offer))
