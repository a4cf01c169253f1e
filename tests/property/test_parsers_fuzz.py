"""Every parser of peer input, fed arbitrary and near-valid input: it parses,
or raises a typed :class:`~xfer.errors.XferError` - never anything else.

Near-valid inputs (a valid message with bytes flipped, cut or appended) reach
deeper than random noise. How many cases ran per parser is counted and
printed at the end of the module (``pytest -s``), so a run can report it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import make_offer
from xfer.envelope import HEADER_SIZE, EnvelopeHeader, Opener, Sealer
from xfer.errors import XferError
from xfer.framing.ibb import IBBReceiver
from xfer.framing.socks5 import Socks5Client, Socks5Server, dst_addr
from xfer.otr.fragments import Reassembler, fragment, parse_fragment
from xfer.otr.messages import parse_encoded, parse_text
from xfer.transfer.offer import (
    TransferDigest,
    TransferOffer,
    TransferVerdict,
    decode_payload,
)

CASES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print("\nfuzz cases per parser:", dict(sorted(CASES.items())))


def typed(name: str, parse: Callable[[], object]) -> None:
    CASES[name] += 1
    with contextlib.suppress(XferError):
        parse()


def seal(plaintext: bytes, **options: int) -> bytes:
    sealer = Sealer(bytes(32), **options)
    return sealer.update(plaintext) + sealer.finalize()


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with a byte flipped, cut short, or extended."""
    n = len(valid)
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda t: valid[: t[0]] + bytes([valid[t[0]] ^ t[1]]) + valid[t[0] + 1 :]
    )
    cut = st.integers(0, n - 1).map(lambda i: valid[:i])
    grow = st.binary(min_size=1, max_size=64).map(lambda extra: valid + extra)
    return st.one_of(flip, cut, grow, st.binary(max_size=2 * n))


HEADER = seal(b"x")[:HEADER_SIZE]


@given(mutated(HEADER))
def test_envelope_header(data: bytes) -> None:
    typed("envelope header", lambda: EnvelopeHeader.parse(data))


SEALED = seal(os.urandom(3000), chunk_size=1024)


@given(mutated(SEALED), st.integers(1, 700))
def test_sealed_stream_in_pieces(data: bytes, step: int) -> None:
    def run() -> None:
        opener = Opener(bytes(32))
        for i in range(0, len(data), step):
            opener.update(data[i : i + step])
        opener.finalize()

    typed("sealed stream", run)


OFFER = make_offer(zeroed=True, size=123, name="report.pdf").encode()
OFFER_V1 = make_offer(
    zeroed=True, size=123, name="report.pdf", sha256=bytes(32)
).encode()


@given(st.one_of(mutated(OFFER), mutated(OFFER_V1)))
def test_transfer_offer(data: bytes) -> None:
    typed("TLV 8 transfer offer", lambda: TransferOffer.decode(data))


VERDICT = TransferVerdict(
    transfer_id=bytes(16), stored=False, reason="the data did not verify"
).encode()
DIGEST = TransferDigest(transfer_id=bytes(16), sha256=bytes(32), size=123).encode()


@given(st.one_of(mutated(VERDICT), mutated(OFFER)))
def test_transfer_verdict(data: bytes) -> None:
    typed("TLV 8 transfer verdict", lambda: decode_payload(data))


@given(st.one_of(mutated(DIGEST), mutated(VERDICT), mutated(OFFER)))
def test_transfer_digest(data: bytes) -> None:
    typed("TLV 8 transfer digest", lambda: decode_payload(data))


_names = st.text(min_size=1, max_size=40).filter(
    lambda t: "\x00" not in t and len(t.encode("utf-8")) <= 1024
)


@given(
    st.builds(
        TransferOffer,
        transfer_id=st.binary(min_size=16, max_size=16),
        salt=st.binary(min_size=32, max_size=32),
        suite=st.integers(0, 255),
        chunk_size=st.integers(1, 2**32 - 1),
        size=st.integers(0, 2**64 - 1),
        name=_names,
        media_type=st.sampled_from(["", "a/b", "application/pdf"]),
        mtime=st.integers(0, 2**64 - 1),
        file_id=st.binary(min_size=32, max_size=32),
    )
)
def test_a_version_2_offer_round_trips(offer: TransferOffer) -> None:
    assert offer.version == 2
    assert decode_payload(offer.encode()) == offer


@given(
    st.builds(
        TransferDigest,
        transfer_id=st.binary(min_size=16, max_size=16),
        sha256=st.binary(min_size=32, max_size=32),
        size=st.integers(0, 2**64 - 1),
    )
)
def test_a_digest_round_trips(digest: TransferDigest) -> None:
    assert decode_payload(digest.encode()) == digest


def _otr_bodies() -> st.SearchStrategy[str]:
    # An encoded message's payload, mutated, then wrapped as OTR text.
    valid = base64.b64decode(
        "AAMCAAABAAAAAAAAAMTcGIvA1zsPFMyDYmRJ1ySkcj7t0OAg4jX94E4bMZN/fw=="
    )
    encoded = mutated(valid).map(lambda b: "?OTR:" + base64.b64encode(b).decode() + ".")
    texts = st.sampled_from(["?OTR?", "?OTRv3?", "?OTR?v2?", "?OTR Error: x", "hi"])
    return st.one_of(encoded, texts, st.text(max_size=80).map(lambda t: "?OTR" + t))


@given(_otr_bodies())
def test_otr_text(text: str) -> None:
    typed("OTR message text", lambda: parse_text(text))
    if text.startswith("?OTR:"):
        typed("OTR encoded message", lambda: parse_encoded(text))


_FRAGMENTS = fragment(
    "?OTR:" + "A" * 300 + ".", 120, sender_tag=0x101, receiver_tag=0x102
)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(_FRAGMENTS),
            st.text(max_size=60).map(lambda t: "?OTR|" + t),
            st.sampled_from(_FRAGMENTS).map(lambda f: f.replace(",", ",,", 1)),
        ),
        max_size=6,
    )
)
def test_otr_fragments(pieces: list[str]) -> None:
    reassembler = Reassembler(max_size=4096)

    def run() -> None:
        for piece in pieces:
            reassembler.add(parse_fragment(piece))

    typed("OTR fragments", run)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(-2, 70000), st.text(max_size=6)),
            st.one_of(
                st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
                st.text(max_size=40),
            ),
        ),
        max_size=6,
    )
)
def test_ibb_packets(packets: list[tuple[int | str, str]]) -> None:
    receiver = IBBReceiver(block_size=64)

    def run() -> None:
        for seq, text in packets:
            receiver.data(seq, text)

    typed("IBB data packets", run)


ADDRESS = dst_addr("sid", "alice@example.org/a", "bob@example.org/b")
#: A whole client handshake (greeting + CONNECT) and a whole server answer.
CLIENT_BYTES = bytes([5, 1, 0, 5, 1, 0, 3, len(ADDRESS)]) + ADDRESS + b"\0\0"
SERVER_BYTES = bytes([5, 0, 5, 0, 0, 3, len(ADDRESS)]) + ADDRESS + b"\0\0"


def feed_in_pieces(receive: Callable[[bytes], bytes], data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        receive(data[i : i + step])


@given(mutated(CLIENT_BYTES), st.integers(1, 9))
def test_socks5_server_handshake(data: bytes, step: int) -> None:
    """What a connecting peer sends our streamhost."""
    server = Socks5Server(lambda address: address == ADDRESS)
    typed("socks5 server", lambda: feed_in_pieces(server.receive_data, data, step))


@given(mutated(SERVER_BYTES), st.integers(1, 9))
def test_socks5_client_handshake(data: bytes, step: int) -> None:
    """What a streamhost (the peer's, or a proxy) answers us."""
    client = Socks5Client(ADDRESS)
    client.initial()
    typed("socks5 client", lambda: feed_in_pieces(client.receive_data, data, step))
