"""The AKE and SMP transition tables, every pair, and hostile input everywhere."""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import os
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.otr_helpers import secure_pair
from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr import Session
from xfer.otr import events as ev
from xfer.otr.ake import AKE, TRANSITIONS, AKEInput, AuthState
from xfer.otr.crypto import DH_P, PrivateKey
from xfer.otr.fragments import parse_fragment
from xfer.otr.messages import DHCommit, DHKey, RevealSignature, Signature, parse_text
from xfer.otr.smp import SMP, SMPInput, SMPOutcome, SMPState
from xfer.otr.smp import TRANSITIONS as SMP_TRANSITIONS


@functools.cache
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


@functools.cache
def transcript() -> dict[AKEInput, object]:
    """One valid message of each kind, from a real exchange."""
    ka, kb = keys()
    bob = AKE(ka, our_tag=0x100, random=os.urandom)
    alice = AKE(kb, our_tag=0x200, random=os.urandom)
    commit = bob.start()
    (dhkey,), _ = alice.handle(AKEInput.DH_COMMIT, commit)
    (reveal,), _ = bob.handle(AKEInput.DH_KEY, dhkey)
    (sig,), result = alice.handle(AKEInput.REVEAL_SIGNATURE, reveal)
    assert result is not None
    return {
        AKEInput.START: None,
        AKEInput.DH_COMMIT: commit,
        AKEInput.DH_KEY: dhkey,
        AKEInput.REVEAL_SIGNATURE: reveal,
        AKEInput.SIGNATURE: sig,
    }


def ake_in(state: AuthState) -> tuple[AKE, AKE]:
    """(an AKE in ``state``, its peer) reached by a real exchange."""
    ka, kb = keys()
    bob = AKE(ka, our_tag=0x100, random=os.urandom)
    alice = AKE(kb, our_tag=0x200, random=os.urandom)
    if state is AuthState.NONE:
        return bob, alice
    commit = bob.start()
    if state is AuthState.AWAITING_DHKEY:
        return bob, alice
    (dhkey,), _ = alice.handle(AKEInput.DH_COMMIT, commit)
    if state is AuthState.AWAITING_REVEALSIG:
        return alice, bob
    bob.handle(AKEInput.DH_KEY, dhkey)
    return bob, alice


def test_the_ake_table_covers_every_pair():
    assert set(TRANSITIONS) == {(s, i) for s in AuthState for i in AKEInput}


def _tamper(message: object, where: int) -> object:
    """Flip one bit in one bytes field (or change the D-H value)."""
    if isinstance(message, DHKey):
        return replace(message, gy=message.gy ^ (1 << (where % 1500)))
    fields = [
        f
        for f in (
            "encrypted_gx",
            "hashed_gx",
            "revealed_key",
            "encrypted_signature",
            "mac",
        )
        if hasattr(message, f)
    ]
    name = fields[where % len(fields)]
    value = bytearray(getattr(message, name))
    value[where % len(value)] ^= 1 << (where % 8)
    return replace(message, **{name: bytes(value)})


@given(
    state=st.sampled_from(list(AuthState)),
    kind=st.sampled_from(list(AKEInput)),
    tamper=st.none() | st.integers(0, 10**6),
)
def test_every_ake_pair_either_works_or_raises_remote_error(state, kind, tamper):
    ake, _ = ake_in(state)
    message = transcript()[kind]
    if tamper is not None and message is not None:
        message = _tamper(message, tamper)
    try:
        out, result = ake.handle(kind, message)
    except RemoteProtocolError:
        assert ake.state is state  # a failed check changes nothing
        return
    assert ake.state in AuthState
    assert all(
        isinstance(m, DHCommit | DHKey | RevealSignature | Signature) for m in out
    )
    if result is not None:
        assert ake.state is AuthState.NONE


def test_a_bad_signature_is_rejected_and_the_ake_waits(monkeypatch):
    alice, bob = ake_in(AuthState.AWAITING_REVEALSIG)
    # Bob's signature is made over the wrong value; everything else is right.
    real_sign = bob._key.sign
    monkeypatch.setattr(bob._key.__class__, "sign", lambda self, m: real_sign(m[::-1]))
    dhkey = alice._dhkey
    (reveal,), _ = bob.handle(AKEInput.DH_KEY, dhkey)
    with pytest.raises(RemoteProtocolError, match="signature"):
        alice.handle(AKEInput.REVEAL_SIGNATURE, reveal)
    assert alice.state is AuthState.AWAITING_REVEALSIG


@pytest.mark.parametrize("gy", [0, 1, DH_P - 1, DH_P, DH_P + 5])
def test_dh_values_out_of_range_are_rejected(gy):
    bob, _ = ake_in(AuthState.AWAITING_DHKEY)
    with pytest.raises(RemoteProtocolError, match="range"):
        bob.handle(AKEInput.DH_KEY, DHKey(sender_tag=0x200, receiver_tag=0x100, gy=gy))
    assert bob.state is AuthState.AWAITING_DHKEY


def test_simultaneous_commits_pick_the_larger_hash():
    ka, kb = keys()
    one = AKE(ka, our_tag=0x100, random=os.urandom)
    two = AKE(kb, our_tag=0x200, random=os.urandom)
    c1, c2 = one.start(), two.start()
    (r1,), _ = one.handle(AKEInput.DH_COMMIT, c2)
    (r2,), _ = two.handle(AKEInput.DH_COMMIT, c1)
    winner_is_one = c1.hashed_gx > c2.hashed_gx
    assert isinstance(r1, DHCommit if winner_is_one else DHKey)
    assert isinstance(r2, DHKey if winner_is_one else DHCommit)


# -- SMP -------------------------------------------------------------------------

X = 123456789


def smp_in(state: SMPState) -> tuple[SMP, dict[SMPInput, object]]:
    """An SMP in ``state`` plus one valid value for every input (fresh copies)."""
    smp, values = _smp_in(state)
    return copy.deepcopy(smp), values


@functools.cache
def _smp_in(state: SMPState) -> tuple[SMP, dict[SMPInput, object]]:
    alice, bob = SMP(os.urandom), SMP(os.urandom)
    m1 = alice.handle(SMPInput.START, (X, None)).tlvs[0]
    bob.handle(SMPInput.RECV_1, m1)
    m2 = bob.handle(SMPInput.SECRET, X).tlvs[0][1]
    m3 = alice.handle(SMPInput.RECV_2, m2).tlvs[0][1]
    m4 = bob.handle(SMPInput.RECV_3, m3).tlvs[0][1]
    values: dict[SMPInput, object] = {
        SMPInput.START: (X, "q"),
        SMPInput.SECRET: X,
        SMPInput.ABORT: None,
        SMPInput.RECV_1: m1,
        SMPInput.RECV_2: m2,
        SMPInput.RECV_3: m3,
        SMPInput.RECV_4: m4,
        SMPInput.RECV_ABORT: b"",
    }
    a, b = SMP(os.urandom), SMP(os.urandom)
    if state is SMPState.EXPECT1:
        return a, values
    first = a.handle(SMPInput.START, (X, None)).tlvs[0]
    if state is SMPState.EXPECT2:
        return a, values
    b.handle(SMPInput.RECV_1, first)
    if state is SMPState.AWAITING_SECRET:
        return b, values
    second = b.handle(SMPInput.SECRET, X).tlvs[0][1]
    if state is SMPState.EXPECT3:
        return b, values
    a.handle(SMPInput.RECV_2, second)
    assert a.state is SMPState.EXPECT4
    return a, values


def test_the_smp_table_covers_every_pair():
    assert set(SMP_TRANSITIONS) == {(s, i) for s in SMPState for i in SMPInput}


@given(
    state=st.sampled_from(list(SMPState)),
    kind=st.sampled_from(list(SMPInput)),
    garble=st.none() | st.binary(max_size=64),
)
def test_every_smp_pair_either_works_or_raises_a_typed_error(state, kind, garble):
    smp, values = smp_in(state)
    value = values[kind]
    if garble is not None and isinstance(value, bytes):
        value = garble
    if garble is not None and isinstance(value, tuple) and isinstance(value[1], bytes):
        value = (value[0], garble)
    try:
        outcome = smp.handle(kind, value)
    except LocalProtocolError:
        assert kind is SMPInput.SECRET
        assert state is not SMPState.AWAITING_SECRET
        return
    except RemoteProtocolError:
        assert garble is not None
        return
    assert isinstance(outcome, SMPOutcome)
    assert smp.state in SMPState


def test_a_forged_smp_proof_is_cheating():
    smp, values = smp_in(SMPState.EXPECT2)
    payload = bytearray(values[SMPInput.RECV_2])
    payload[-5] ^= 1  # inside the last MPI (D6): the proof no longer holds
    outcome = smp.handle(SMPInput.RECV_2, bytes(payload))
    assert outcome.event == "cheated"
    assert smp.state is SMPState.EXPECT1


# -- whole sessions --------------------------------------------------------------


def pair_of_sessions() -> tuple[Session, Session]:
    return secure_pair(keys())


@given(
    junk=st.text(max_size=300)
    | st.binary(max_size=300).map(
        lambda b: "?OTR:" + base64.b64encode(b"\x00\x03" + b).decode() + "."
    )
)
def test_any_junk_leaves_an_encrypted_session_working(junk):
    a, b = pair_of_sessions()
    with contextlib.suppress(RemoteProtocolError):
        b.receive(junk)
    b.data_to_send()
    a.send("still here")
    (text,) = a.data_to_send()
    assert b.receive(text) == [ev.MessageReceived(text="still here")]


@given(text=st.text(max_size=500))
def test_text_parsers_never_raise_anything_else(text):
    for parser in (parse_text, parse_fragment):
        with contextlib.suppress(RemoteProtocolError):
            parser(text)


@given(script=st.lists(st.sampled_from("ab"), min_size=1, max_size=25))
def test_any_interleaving_of_sends_is_delivered_in_order(script):
    a, b = pair_of_sessions()
    in_flight: dict[str, list[str]] = {"a": [], "b": []}
    got: dict[str, list[str]] = {"a": [], "b": []}
    for i, who in enumerate(script):
        sender = a if who == "a" else b
        sender.send(f"{who}{i}")
        in_flight[who] += sender.data_to_send()
        # Deliver the other side's backlog only now and then.
        if i % 3 == 2:
            other = "b" if who == "a" else "a"
            receiver = a if other == "b" else b
            for m in in_flight[other]:
                got[other] += [e.text for e in receiver.receive(m)]
            in_flight[other] = []
    for who, receiver in (("a", b), ("b", a)):
        for m in in_flight[who]:
            got[who] += [e.text for e in receiver.receive(m)]
    for who in "ab":
        assert got[who] == [f"{w}{i}" for i, w in enumerate(script) if w == who]


def test_secrets_do_not_show_in_reprs():
    a, _ = pair_of_sessions()
    assert str(a._keys.our_dh.private) not in repr(a._keys.our_dh)
    assert repr(a.private_key).startswith("PrivateKey(fingerprint=")
    pair = a._keys.sending_pair()
    assert pair.send_aes.hex() not in repr(pair)
