"""SMP off the caller's thread (``Policy.defer_smp``): an SMP TLV queues a
step and costs no exponentiation inside ``receive``; the step is a pure
function of a copy of the machine; results that an abort, a re-key or the
end of the conversation made stale are ignored; the queue is bounded."""

from __future__ import annotations

import pickle
import random
from typing import TYPE_CHECKING

import pytest

from tests import otr_helpers
from tests.otr_helpers import relay
from xfer.errors import LocalProtocolError
from xfer.otr import MessageState, Policy, Session
from xfer.otr import events as ev
from xfer.otr import smp as smp_module
from xfer.otr.crypto import PrivateKey
from xfer.otr.session import SMP_QUEUE_LIMIT
from xfer.otr.smp import (
    SMP,
    SMPInput,
    SMPJob,
    SMPOutcome,
    SMPState,
    run_smp_job,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.otr_helpers import Pows

DEFERRED = Policy(defer_smp=True)


@pytest.fixture(scope="module")
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


def secure_pair(
    keys: tuple[PrivateKey, PrivateKey], policy: Policy = DEFERRED
) -> tuple[Session, Session]:
    """A pair whose SMP is deferred unless ``policy`` says otherwise."""
    return otr_helpers.secure_pair(keys, policy)


def smp1_text(alice: Session) -> str:
    """Alice starts SMP (computed inline) and returns the message for bob."""
    alice.smp_start(b"secret", "q?")
    alice.smp_run()
    (text,) = alice.data_to_send()
    return text


def run(session: Session) -> list[ev.Event]:
    """Take, compute and apply one step, as the adapter does, the job and
    its result through pickle as a worker process sees them."""
    job = session.smp_next()
    assert job is not None
    done = run_smp_job(pickle.loads(pickle.dumps(job)))
    return session.smp_finish(pickle.loads(pickle.dumps(done)))


def test_an_smp_tlv_is_queued_and_receive_computes_no_pow(keys, pows: Pows) -> None:
    alice, bob = secure_pair(keys)
    text = smp1_text(alice)
    pows.calls = 0
    assert bob.receive(text) == [ev.SMPPending()]
    assert pows.calls == 0
    assert bob.smp.state is SMPState.EXPECT1
    assert bob.smp_busy
    assert bob.data_to_send() == []
    job = bob.smp_next()
    assert job is not None
    assert bob.smp_next() is None  # one step at a time
    done = run_smp_job(job)
    assert pows.calls > 0
    assert bob.smp_finish(done) == [ev.SMPAsked(question="q?")]
    assert bob.smp.state is SMPState.AWAITING_SECRET
    assert not bob.smp_busy


def test_user_calls_queue_their_step_too(keys, pows: Pows) -> None:
    alice, _ = secure_pair(keys)
    pows.calls = 0
    alice.smp_start(b"secret")
    assert pows.calls == 0
    assert alice.data_to_send() == []
    assert run(alice) == []
    assert len(alice.data_to_send()) == 1
    assert alice.smp.state is SMPState.EXPECT2


def test_the_step_function_gives_what_handle_gives() -> None:
    def exchange(step: Callable[[SMP, SMPInput, object], SMPOutcome]) -> list[object]:
        a, b = SMP(random.Random(1).randbytes), SMP(random.Random(2).randbytes)
        out: list[object] = []
        one = step(a, SMPInput.START, (11, "q"))
        asked = step(b, SMPInput.RECV_1, one.tlvs[0])
        two = step(b, SMPInput.SECRET, 12)
        three = step(a, SMPInput.RECV_2, two.tlvs[0][1])
        four = step(b, SMPInput.RECV_3, three.tlvs[0][1])
        last = step(a, SMPInput.RECV_4, four.tlvs[0][1])
        out += [one, asked, two, three, four, last, a.state, b.state]
        return out

    def by_handle(m: SMP, kind: SMPInput, value: object) -> SMPOutcome:
        return m.handle(kind, value)

    def by_job(m: SMP, kind: SMPInput, value: object) -> SMPOutcome:
        before = (m.state, m.copy()._v)
        done = run_smp_job(SMPJob(ticket=1, machine=m, kind=kind, value=value))
        assert (m.state, m._v) == before, "the step changed its input"
        m.state, m._v = done.machine.state, done.machine._v
        return done.outcome

    assert exchange(by_job) == exchange(by_handle)
    assert exchange(by_job)[-3].event == "failed"


def test_a_third_step_held_at_once_aborts_and_a_flood_holds_at_most_two(
    keys,
) -> None:
    alice, bob = secure_pair(keys)
    text = smp1_text(alice)
    assert bob.receive(text) == [ev.SMPPending()]
    job = bob.smp_next()  # in flight
    assert job is not None
    for _ in range(2):
        alice.send("", [(smp_module.TLV_SMP1, b"")])
    second, third = alice.data_to_send()
    assert bob.receive(second) == [ev.SMPPending()]
    assert bob.receive(third) == [ev.SMPAborted()]
    assert not bob.smp_busy
    assert len(bob.data_to_send()) == 1  # TLV 6 to the peer
    assert bob.smp_finish(run_smp_job(job)) == []  # the aborted step is stale
    assert bob.smp.state is SMPState.EXPECT1
    # A flood, none of it computed meanwhile, never holds more than
    # SMP_QUEUE_LIMIT steps: every one beyond aborts what is held.
    for _ in range(3 * SMP_QUEUE_LIMIT):
        alice.send("", [(smp_module.TLV_SMP1, b"")])
    seen = [bob.receive(flooded) for flooded in alice.data_to_send()]
    pattern = [[ev.SMPPending()]] * SMP_QUEUE_LIMIT + [[ev.SMPAborted()]]
    assert seen == pattern * 2
    assert not bob.smp_busy


def test_our_abort_while_in_flight_discards_the_result(keys) -> None:
    alice, bob = secure_pair(keys)
    bob.receive(smp1_text(alice))
    job = bob.smp_next()
    assert job is not None
    assert bob.smp_abort() == [ev.SMPAborted()]
    assert len(bob.data_to_send()) == 1
    assert bob.smp_finish(run_smp_job(job)) == []
    assert bob.data_to_send() == []
    assert bob.smp.state is SMPState.EXPECT1
    with pytest.raises(LocalProtocolError):
        bob.smp_answer(b"secret")  # nothing asked any more


def test_the_peers_abort_supersedes_the_step_in_flight(keys) -> None:
    alice, bob = secure_pair(keys)
    bob.smp_start(b"secret")
    job = bob.smp_next()
    assert job is not None
    alice.smp_abort()
    (abort,) = alice.data_to_send()
    assert bob.receive(abort) == [ev.SMPAborted()]
    assert bob.smp_finish(run_smp_job(job)) == []
    assert bob.data_to_send() == []  # our SMP 1 never goes out


@pytest.mark.parametrize("how", ["re-key", "our end", "their end"])
def test_a_result_after_a_rekey_or_the_end_is_ignored(keys, how: str) -> None:
    alice, bob = secure_pair(keys)
    bob.receive(smp1_text(alice))
    job = bob.smp_next()
    assert job is not None
    if how == "re-key":
        alice.start_ake()
        relay(alice, bob)
        assert bob.state is MessageState.ENCRYPTED
    elif how == "our end":
        bob.end()
    else:
        alice.end()
        (bye,) = alice.data_to_send()
        assert bob.receive(bye) == [ev.GoneInsecure()]
    bob.data_to_send()
    assert bob.smp_finish(run_smp_job(job)) == []
    assert bob.data_to_send() == []
    assert bob.smp.state is SMPState.EXPECT1


def rekey(alice: Session, bob: Session) -> tuple[list[ev.Event], list[ev.Event]]:
    """Alice starts a new AKE; every AKE message goes across: the events of
    each side (no data message is sent meanwhile)."""
    seen: tuple[list[ev.Event], list[ev.Event]] = ([], [])
    alice.start_ake()
    for _ in range(6):
        moved = False
        for me, other, mine in ((alice, bob, seen[1]), (bob, alice, seen[0])):
            for text in me.data_to_send():
                moved = True
                mine.extend(other.receive(text))
        if not moved:
            break
    return seen


def test_a_rekey_before_our_smp_1_went_out_starts_it_again(keys) -> None:
    """Both users ran 'xfer verify' at once and their AKEs crossed: the
    second one finished while our SMP 1 was still being computed. The peer
    saw nothing of it, so it starts again on the new keys (the secret is
    bound to the ssid), and the whole exchange then succeeds."""
    alice, bob = secure_pair(keys)
    alice.smp_start(b"our secret", "what?")
    stale = alice.smp_next()
    assert stale is not None
    old_ssid = alice.ssid
    alice_seen, bob_seen = rekey(bob, alice)
    assert alice.ssid != old_ssid
    assert [type(e) for e in bob_seen] == [ev.GoneSecure, ev.SMPPending]
    assert alice.smp_finish(run_smp_job(stale)) == []  # for the old keys
    assert alice.data_to_send() == []
    alice_seen, bob_seen = pump(alice, bob)
    assert ev.SMPAsked(question="what?") in bob_seen
    bob.smp_answer(b"our secret")
    alice_seen, bob_seen = pump(alice, bob)
    assert ev.SMPSucceeded(fingerprint=keys[1].public.fingerprint) in alice_seen
    assert ev.SMPSucceeded(fingerprint=keys[0].public.fingerprint) in bob_seen


def test_a_rekey_during_an_exchange_aborts_it_on_both_sides(keys) -> None:
    """Once SMP 1 went out the exchange cannot start over unseen: both sides
    are told it ended (before, both waited for a step that never came)."""
    alice, bob = secure_pair(keys)
    alice.smp_start(b"our secret", "what?")
    _, bob_seen = pump(alice, bob)
    assert ev.SMPAsked(question="what?") in bob_seen
    alice_seen, bob_seen = rekey(alice, bob)
    assert ev.SMPAborted() in alice_seen
    assert ev.SMPAborted() in bob_seen
    assert alice.smp.state is bob.smp.state is SMPState.EXPECT1
    with pytest.raises(LocalProtocolError):
        bob.smp_answer(b"our secret")  # the question is gone


def test_a_rekey_to_another_key_does_not_carry_our_secret_over(keys) -> None:
    """The SMP our user started was meant for the key shown to them: if the
    peer instance now proves another key, it is not started again."""
    alice, bob = secure_pair(keys)
    alice.smp_start(b"our secret")
    assert alice.smp_next() is not None
    mallory = Session(
        PrivateKey.generate(),
        our_tag=bob.our_tag,
        their_tag=alice.our_tag,
        policy=DEFERRED,
    )
    _, alice_seen = rekey(mallory, alice)
    assert alice.their_fingerprint == mallory.private_key.public.fingerprint
    assert alice_seen[-1] == ev.SMPAborted()
    assert alice.smp.state is SMPState.EXPECT1
    assert not alice.smp_busy
    assert mallory.data_to_send() == []


def test_start_or_answer_while_a_step_is_computed_is_refused(keys) -> None:
    alice, bob = secure_pair(keys)
    bob.receive(smp1_text(alice))
    with pytest.raises(LocalProtocolError):
        bob.smp_start(b"mine")
    with pytest.raises(LocalProtocolError):
        bob.smp_answer(b"secret")  # asked, but not computed yet
    assert run(bob) == [ev.SMPAsked(question="q?")]
    bob.smp_answer(b"secret")
    assert bob.smp_busy


def pump(alice: Session, bob: Session) -> tuple[list[ev.Event], list[ev.Event]]:
    """Move messages and run every deferred step (through pickle) until
    quiet; the SMP events each side saw."""
    seen: tuple[list[ev.Event], list[ev.Event]] = ([], [])
    for _ in range(20):
        moved = False
        for me, other, mine in ((alice, bob, seen[1]), (bob, alice, seen[0])):
            for text in me.data_to_send():
                moved = True
                mine.extend(other.receive(text))
            while (job := other.smp_next()) is not None:
                moved = True
                done = pickle.loads(pickle.dumps(run_smp_job(job)))
                mine.extend(other.smp_finish(done))
        if not moved:
            break
    return seen


@pytest.mark.parametrize("same", [True, False], ids=["same-secret", "other-secret"])
def test_a_whole_smp_through_the_deferred_path(keys, same: bool) -> None:
    alice, bob = secure_pair(keys)
    alice.smp_start(b"our secret", "what?")
    alice_seen, bob_seen = pump(alice, bob)
    assert ev.SMPAsked(question="what?") in bob_seen
    bob.smp_answer(b"our secret" if same else b"another")
    more_alice, more_bob = pump(alice, bob)
    alice_seen += more_alice
    bob_seen += more_bob

    def outcome(seen: list[ev.Event]) -> list[ev.Event]:
        return [e for e in seen if not isinstance(e, (ev.SMPPending, ev.SMPAsked))]

    if same:
        assert outcome(alice_seen) == [
            ev.SMPSucceeded(fingerprint=keys[1].public.fingerprint)
        ]
        assert outcome(bob_seen) == [
            ev.SMPSucceeded(fingerprint=keys[0].public.fingerprint)
        ]
    else:
        assert outcome(alice_seen) == outcome(bob_seen) == [ev.SMPFailed()]
    assert not alice.smp_busy
    assert not bob.smp_busy


def test_without_the_policy_receive_still_runs_smp_inline(keys) -> None:
    alice, bob = secure_pair(keys, Policy())
    alice.smp_start(b"secret", "q?")
    (text,) = alice.data_to_send()
    assert bob.receive(text) == [ev.SMPAsked(question="q?")]
    assert not bob.smp_busy


def test_the_verdict_of_a_step_under_way_when_the_peer_ends_still_counts(
    keys,
) -> None:
    """The peer sends its last SMP message and ends the conversation at
    once (``xfer verify`` exits): the exchange is over, its result stands."""
    alice, bob = secure_pair(keys)
    alice.smp_start(b"same")
    pump(alice, bob)
    bob.smp_answer(b"same")
    assert run(bob) == []
    (two,) = bob.data_to_send()
    assert alice.receive(two) == [ev.SMPPending()]
    assert run(alice) == []
    (three,) = alice.data_to_send()
    bob.receive(three)
    assert run(bob) == [ev.SMPSucceeded(fingerprint=keys[0].public.fingerprint)]
    bob.end()
    four, bye = bob.data_to_send()
    assert alice.receive(four) == [ev.SMPPending()]
    job = alice.smp_next()
    assert job is not None
    assert alice.receive(bye) == [ev.GoneInsecure()]
    assert alice.smp_finish(run_smp_job(job)) == [
        ev.SMPSucceeded(fingerprint=keys[1].public.fingerprint)
    ]
    assert alice.data_to_send() == []
    assert alice.smp_finish(run_smp_job(job)) == []  # once
