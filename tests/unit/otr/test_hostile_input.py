"""Hostile OTR input costs bounded work: oversized or out-of-range values are
refused before any arithmetic, and SMP values outside the group end the
exchange as a failure the user sees.

The exponentiations an SMP step does are watched by replacing ``pow`` in
:mod:`xfer.otr.smp` with one that refuses a modulus other than p or an
exponent longer than p (what made one TLV stall the event loop for seconds),
and counts the calls.
"""

from __future__ import annotations

import base64
import copy
import os
from typing import TYPE_CHECKING

import pytest

from tests.otr_helpers import secure_pair
from xfer.errors import RemoteProtocolError
from xfer.otr import Session
from xfer.otr import events as ev
from xfer.otr import smp as smp_module
from xfer.otr.crypto import DH_G, DH_P, DH_Q, PrivateKey, PublicKey
from xfer.otr.data import Reader, encode_int, encode_mpi, encode_short
from xfer.otr.messages import (
    DataMessage,
    DHCommit,
    DHKey,
    RevealSignature,
    Signature,
    parse_encoded,
)
from xfer.otr.smp import (
    SMP,
    TLV_SMP1,
    TLV_SMP2,
    TLV_SMP3,
    SMPInput,
    SMPState,
    smp_secret,
)
from xfer.testing.otr_inputs import LAYOUTS, filler
from xfer.testing.otr_inputs import smp_payload as payload

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.otr_helpers import Pows

HUGE = 1 << (64 * 1024 * 8 - 1)  # a 64 KiB MPI
#: Out of bounds for each kind, smallest first: the boundary, then huge.
BAD = {
    "g": [0, 1, DH_P - 1, DH_P, DH_P + 2, HUGE],
    "c": [1 << 256, HUGE],
    "d": [0, DH_Q, DH_P, HUGE],
}
#: -4 mod p: in range, but of order 2q (-1 is not a square mod this p).
OUTSIDE_SUBGROUP = DH_P - 4


@pytest.fixture(scope="module")
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


def smp_in(kind: int) -> SMP:
    """An SMP machine in the state that expects TLV ``kind``, reached by a
    real exchange with another machine (made once, copied for each test)."""
    if kind not in _PREPARED:
        _PREPARED[kind] = _prepare(kind)
    return copy.deepcopy(_PREPARED[kind])


_PREPARED: dict[int, SMP] = {}


def _prepare(kind: int) -> SMP:
    a, b = SMP(os.urandom), SMP(os.urandom)
    if kind == TLV_SMP1:
        return b
    first = a.handle(SMPInput.START, (5, None)).tlvs[0]
    if kind == TLV_SMP2:
        return a
    b.handle(SMPInput.RECV_1, first)
    second = b.handle(SMPInput.SECRET, 5).tlvs[0][1]
    if kind == TLV_SMP3:
        return b
    a.handle(SMPInput.RECV_2, second)
    assert a.state is SMPState.EXPECT4
    return a


def feed(machine: SMP, kind: int, data: bytes) -> str | None:
    if kind == TLV_SMP1:
        return machine.handle(SMPInput.RECV_1, (kind, data)).event
    step = {TLV_SMP2: SMPInput.RECV_2, TLV_SMP3: SMPInput.RECV_3}
    return machine.handle(step.get(kind, SMPInput.RECV_4), data).event


def hostile_cases() -> Iterator[tuple[int, int, int]]:
    for kind, layout in LAYOUTS.items():
        for position, letter in enumerate(layout):
            for value in BAD[letter]:
                yield kind, position, value


@pytest.mark.parametrize(
    ("kind", "position", "value"),
    [
        pytest.param(*case, id=f"tlv{case[0]}-v{case[1]}-{case[2].bit_length()}bit")
        for case in hostile_cases()
    ],
)
def test_out_of_range_smp_values_are_cheating_found_before_any_pow(
    pows: Pows, kind: int, position: int, value: int
) -> None:
    machine = smp_in(kind)
    values = filler(kind)
    values[position] = value
    pows.calls = 0
    assert feed(machine, kind, payload(values)) == "cheated"
    assert pows.calls == 0
    assert machine.state is SMPState.EXPECT1


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_group_elements_outside_the_subgroup_are_cheating(
    pows: Pows, kind: int
) -> None:
    layout = LAYOUTS[kind]
    for position in (i for i, letter in enumerate(layout) if letter == "g"):
        machine = smp_in(kind)
        values = filler(kind)
        values[position] = OUTSIDE_SUBGROUP
        pows.calls = 0
        assert feed(machine, kind, payload(values)) == "cheated"
        # Only the order checks ran (one pow each), no proof.
        assert pows.calls <= layout.count("g")


def test_a_valid_proof_for_an_element_of_order_2q_is_refused(pows: Pows) -> None:
    """-(g^a) with a challenge that happens to be even passes the proof
    (the sign cancels), so only the order check catches it: without it the
    exchange goes on, and the answer leaks a bit of the responder's secret
    exponents."""

    def proof(version: int, secret: int) -> tuple[int, int]:
        while True:
            r = int.from_bytes(os.urandom(192), "big") % DH_Q
            c = int.from_bytes(
                smp_module.sha256(bytes([version]) + encode_mpi(pow(DH_G, r, DH_P))),
                "big",
            )
            if c % 2 == 0:
                return c, (r - secret * c) % DH_Q

    a2, a3 = 12345, 67890
    c2, d2 = proof(1, a2)
    c3, d3 = proof(2, a3)
    g2a = DH_P - pow(DH_G, a2, DH_P)
    g3a = pow(DH_G, a3, DH_P)
    outcome = SMP(os.urandom).handle(
        SMPInput.RECV_1, (TLV_SMP1, payload([g2a, c2, d2, g3a, c3, d3]))
    )
    assert outcome.event == "cheated"


def test_a_whole_smp_uses_only_bounded_exponents(pows: Pows) -> None:
    for their_secret, expected in ((b"same", "succeeded"), (b"other", "failed")):
        a, b = SMP(os.urandom), SMP(os.urandom)
        x = smp_secret(b"A" * 20, b"B" * 20, b"ssid0000", b"same")
        y = smp_secret(b"A" * 20, b"B" * 20, b"ssid0000", their_secret)
        one = a.handle(SMPInput.START, (x, "q?")).tlvs[0]
        assert b.handle(SMPInput.RECV_1, one).event == "asked"
        two = b.handle(SMPInput.SECRET, y).tlvs[0][1]
        three = a.handle(SMPInput.RECV_2, two).tlvs[0][1]
        last = b.handle(SMPInput.RECV_3, three)
        assert last.event == expected
        assert a.handle(SMPInput.RECV_4, last.tlvs[0][1]).event == expected


# -- through a session: what the user sees ------------------------------------


def test_a_hostile_smp_tlv_ends_as_a_failure_the_user_sees(keys) -> None:
    alice, bob = secure_pair(keys)
    values = filler(TLV_SMP1)
    values[1] = 1 << 4096  # an oversized challenge
    alice.send("", [(TLV_SMP1, payload(values))])
    (text,) = alice.data_to_send()
    assert bob.receive(text) == [ev.SMPFailed(cheated=True)]
    assert bob.smp.state is SMPState.EXPECT1
    # The peer is told (TLV 6), and the session itself is unharmed.
    assert len(bob.data_to_send()) == 1
    bob.send("still here")
    (reply,) = bob.data_to_send()
    assert alice.receive(reply) == [ev.MessageReceived(text="still here")]


def test_one_smp_step_per_data_message(keys) -> None:
    """Many SMP TLVs in one message cost one step, not one proof check each."""
    alice, bob = secure_pair(keys)
    started = SMP(os.urandom).handle(SMPInput.START, (7, None)).tlvs[0]
    alice.send("", [started] * 5)
    (text,) = alice.data_to_send()
    assert bob.receive(text) == [ev.SMPAsked(question=None)]
    assert bob.smp.state is SMPState.AWAITING_SECRET


# -- parsers: oversized values are refused before they become numbers ---------


def tagged(message: type, **fields: object) -> str:
    """``message`` from tag 0x1111 to 0x2222 (0 for a D-H commit), encoded."""
    receiver = 0 if message is DHCommit else 0x2222
    return message(sender_tag=0x1111, receiver_tag=receiver, **fields).encode()


def header(kind: int) -> bytes:
    return encode_short(3) + bytes([kind]) + encode_int(0x1111) + encode_int(0x2222)


def encoded(raw: bytes) -> str:
    return "?OTR:" + base64.b64encode(raw).decode() + "."


BIG_GY = 1 << (192 * 8)  # 193 bytes: longer than p


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(tagged(DHKey, gy=BIG_GY), id="dh-key-gy"),
        pytest.param(tagged(DHKey, gy=HUGE), id="dh-key-gy-64k"),
        pytest.param(
            tagged(DHCommit, encrypted_gx=bytes(197), hashed_gx=bytes(32)),
            id="dh-commit-gx",
        ),
        pytest.param(
            tagged(
                RevealSignature,
                revealed_key=bytes(17),
                encrypted_signature=b"",
                mac=bytes(20),
            ),
            id="reveal-key",
        ),
        pytest.param(
            tagged(
                RevealSignature,
                revealed_key=bytes(16),
                encrypted_signature=bytes(64 * 1024),
                mac=bytes(20),
            ),
            id="reveal-signature",
        ),
        pytest.param(
            tagged(Signature, encrypted_signature=bytes(64 * 1024), mac=bytes(20)),
            id="signature",
        ),
        pytest.param(
            tagged(
                DataMessage,
                flags=0,
                sender_keyid=1,
                recipient_keyid=1,
                next_dh=BIG_GY,
                ctr=bytes(8),
                encrypted=b"x",
                mac=bytes(20),
            ),
            id="data-next-dh",
        ),
        pytest.param(
            encoded(header(0x0A) + encode_int(1 << 20) + bytes(1 << 20)),
            id="dh-key-1mib",
        ),
    ],
)
def test_oversized_values_do_not_parse(text: str) -> None:
    with pytest.raises(RemoteProtocolError, match="too long"):
        parse_encoded(text)


def test_values_at_the_bounds_still_parse() -> None:
    top = DHKey(sender_tag=0x1111, receiver_tag=0x2222, gy=DH_P - 2)
    assert parse_encoded(top.encode()) == top
    commit = DHCommit(
        sender_tag=0x1111,
        receiver_tag=0,
        encrypted_gx=bytes(196),
        hashed_gx=bytes(32),
    )
    assert parse_encoded(commit.encode()) == commit


def test_a_public_key_with_a_huge_p_does_not_parse() -> None:
    raw = (
        encode_short(0)
        + encode_mpi(1 << (4096 * 8))
        + encode_mpi(1 << 159)
        + encode_mpi(2)
        + encode_mpi(3)
    )
    with pytest.raises(RemoteProtocolError, match="too long"):
        PublicKey.read(Reader(raw))


def test_reader_bounds_mpis_by_their_encoded_length() -> None:
    assert Reader(encode_mpi(255)).mpi(1) == 255
    with pytest.raises(RemoteProtocolError, match="too long"):
        Reader(encode_mpi(256)).mpi(1)
    with pytest.raises(RemoteProtocolError, match="too long"):
        Reader(encode_int(3) + b"abc").data(2)


def test_an_oversized_dh_key_leaves_the_ake_waiting(keys) -> None:
    alice = Session(keys[0], our_tag=0x1111)
    alice.start_ake()
    alice.data_to_send()
    before = alice.ake.state
    hostile = DHKey(sender_tag=0x2222, receiver_tag=0x1111, gy=HUGE).encode()
    with pytest.raises(RemoteProtocolError):
        alice.receive(hostile)
    assert alice.ake.state is before
    assert alice.data_to_send() == []
