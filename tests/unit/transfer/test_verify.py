"""The receiver's verifier, without I/O: a stream sealed for an offer
verifies; one that differs from the offer in any way the servers could make
it differ does not, and nothing unverified is released."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.helpers import make_offer
from xfer.envelope import Sealer
from xfer.errors import IntegrityError, StreamTruncated
from xfer.transfer.offer import TransferOffer
from xfer.transfer.verify import Verifier

KEY = bytes(range(32))


def sealed(offer: TransferOffer, data: bytes, key: bytes = KEY) -> bytes:
    sealer = Sealer.announced(
        key,
        salt=offer.salt,
        transfer_id=offer.transfer_id,
        chunk_size=offer.chunk_size,
    )
    return sealer.update(data) + sealer.finalize()


def offer_for(data: bytes, **fields: object) -> TransferOffer:
    return make_offer(
        chunk_size=2048,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        **fields,  # type: ignore[arg-type]
    )


def run(verifier: Verifier, stream: bytes, step: int = 700) -> bytes:
    """Feed ``stream`` in pieces as a transport would; the plaintext."""
    out = bytearray()
    for i in range(0, len(stream), step):
        piece = stream[i : i + step]
        buf = bytearray(verifier.opener.output_bound(len(piece)))
        released = verifier.feed(piece, buf)
        verifier.digest.update(released)
        out += released
    tail = verifier.finish()
    return bytes(out + tail)


def test_a_stream_sealed_for_the_offer_verifies() -> None:
    data = os.urandom(5000)
    offer = offer_for(data)
    stream = sealed(offer, data)
    assert run(Verifier(KEY, offer, len(stream), None), stream) == data


@pytest.mark.parametrize(
    "change",
    ["salt", "chunk_size", "sha256", "size", "key", "extra byte", "flipped bit"],
)
def test_a_stream_that_is_not_the_offers_fails(change: str) -> None:
    data = os.urandom(5000)
    offer = offer_for(data)
    stream = sealed(offer, data)
    budget = len(stream)
    key = KEY
    if change == "salt":
        stream = sealed(offer_for(data, transfer_id=offer.transfer_id), data)
    elif change == "chunk_size":
        stream = sealed(
            make_offer(
                chunk_size=1024,
                size=len(data),
                transfer_id=offer.transfer_id,
                salt=offer.salt,
            ),
            data,
        )
        budget = len(stream)
    elif change == "sha256":
        offer = offer_for(
            data[:-1] + b"x", transfer_id=offer.transfer_id, salt=offer.salt
        )
    elif change == "size":
        budget = len(stream) - 1
    elif change == "key":
        key = bytes(32)
    elif change == "extra byte":
        stream += b"\x00"
    else:
        flipped = bytearray(stream)
        flipped[len(stream) // 2] ^= 1
        stream = bytes(flipped)
    with pytest.raises(IntegrityError):
        run(Verifier(key, offer, budget, None), stream)


def test_a_cut_stream_is_a_break_not_a_file() -> None:
    data = os.urandom(5000)
    offer = offer_for(data)
    stream = sealed(offer, data)
    verifier = Verifier(KEY, offer, len(stream), None)
    with pytest.raises(StreamTruncated):
        run(verifier, stream[: len(stream) // 2])
    assert verifier.plain < len(data)
