"""The XMPP adapter's SMP runner on a real event loop: steps are computed
off the loop (in a worker process by default), one per session at a time
and in order; a session dropped meanwhile gets no answer; the work in
flight across all peers is bounded, the rest answered with an SMP abort."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

import pytest

from tests.otr_helpers import secure_pair
from xfer.otr import Policy, Session
from xfer.otr import events as ev
from xfer.otr.crypto import PrivateKey
from xfer.otr.smp import SMPInput, SMPJob
from xfer.xmpp.smp import SMPRunner

if TYPE_CHECKING:
    from collections.abc import Callable

DEFERRED = Policy(defer_smp=True)


@pytest.fixture(scope="module")
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


class Gate(Executor):
    """Holds every submitted call until the test lets it run."""

    def __init__(self) -> None:
        self.held: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        future: Future[Any] = Future()
        self.held.append((future, fn, args))
        return future

    def jobs(self) -> list[SMPJob]:
        return [args[0] for _, _, args in self.held]

    def release(self, index: int = 0) -> None:
        future, fn, args = self.held.pop(index)
        future.set_result(fn(*args))


class Recorder:
    """The runner's ``apply`` and ``alive``: what the adapter would do."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, Session, list[ev.Event]]] = []
        self.gone: set[int] = set()

    def apply(self, peer: str, session: Session, events: list[ev.Event]) -> None:
        self.applied.append((peer, session, events))

    def alive(self, peer: str, session: Session) -> bool:
        return id(session) not in self.gone


def gated(**options: Any) -> tuple[Gate, Recorder, SMPRunner]:
    """A runner whose steps wait for the test, and what it applied."""
    gate, log = Gate(), Recorder()
    runner = SMPRunner(apply=log.apply, alive=log.alive, executor=gate, **options)
    return gate, log, runner


def send_smp1(sender: Session, receiver: Session, secret: bytes) -> None:
    """``sender`` starts an SMP (its step inline); ``receiver`` queues SMP 1."""
    sender.smp_start(secret)
    sender.smp_run()
    (text,) = sender.data_to_send()
    assert receiver.receive(text) == [ev.SMPPending()]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_whole_smp_runs_in_the_worker_process_and_succeeds(keys) -> None:
    alice, bob = secure_pair(keys, DEFERRED)
    sessions = {"alice@x/1": alice, "bob@x/1": bob}
    other = {"alice@x/1": "bob@x/1", "bob@x/1": "alice@x/1"}
    seen: dict[str, list[ev.Event]] = {"alice@x/1": [], "bob@x/1": []}
    answered = asyncio.Event()
    finished = asyncio.Event()
    runner: SMPRunner

    def deliver(me: str) -> None:
        """What ``me`` queued goes to the other side, which runs its SMP."""
        them = other[me]
        for text in sessions[me].data_to_send():
            for event in sessions[them].receive(text):
                handle(them, event)

    def handle(me: str, event: ev.Event) -> None:
        seen[me].append(event)
        if isinstance(event, ev.SMPPending):
            runner.kick(me, sessions[me])
        elif isinstance(event, ev.SMPAsked):
            answered.set()
        elif isinstance(event, (ev.SMPSucceeded, ev.SMPFailed)) and all(
            any(isinstance(e, ev.SMPSucceeded | ev.SMPFailed) for e in s)
            for s in seen.values()
        ):
            finished.set()

    def apply(me: str, session: Session, events: list[ev.Event]) -> None:
        deliver(me)
        for event in events:
            handle(me, event)

    runner = SMPRunner(apply=apply, alive=lambda peer, s: True)
    try:
        alice.smp_start(b"shared", "which?")
        runner.kick("alice@x/1", alice)
        await asyncio.wait_for(answered.wait(), 60)
        bob.smp_answer(b"shared")
        runner.kick("bob@x/1", bob)
        await asyncio.wait_for(finished.wait(), 60)
    finally:
        runner.close()
    assert ev.SMPAsked(question="which?") in seen["bob@x/1"]
    assert ev.SMPSucceeded(fingerprint=keys[1].public.fingerprint) in seen["alice@x/1"]
    assert ev.SMPSucceeded(fingerprint=keys[0].public.fingerprint) in seen["bob@x/1"]
    assert runner.spawn_seconds is not None  # it did start a worker process


async def test_one_step_per_session_at_a_time_applied_in_order(keys) -> None:
    alice, bob = secure_pair(keys, DEFERRED)
    gate, log, runner = gated()
    # Both users start at once: bob's own step, then alice's SMP 1 behind it.
    bob.smp_start(b"b")
    send_smp1(alice, bob, b"a")
    runner.kick("alice@x/1", bob)
    runner.kick("alice@x/1", bob)  # a second kick takes nothing more
    await settle()
    assert [job.kind for job in gate.jobs()] == [SMPInput.START]
    gate.release()
    await settle()
    # Our SMP 1 was applied (sent) before the peer's step was even taken.
    assert [events for _, _, events in log.applied] == [[ev.SMPPending()]]
    assert len(bob.data_to_send()) == 1
    assert [job.kind for job in gate.jobs()] == [SMPInput.RECV_1]
    gate.release()
    await settle()
    # Two SMP 1s crossed: out of order, so the exchange aborts (TLV 6).
    assert log.applied[-1][2] == [ev.SMPAborted()]
    assert not gate.held
    assert not bob.smp_busy
    runner.close()


async def test_a_session_dropped_meanwhile_gets_no_answer(keys) -> None:
    alice, bob = secure_pair(keys, DEFERRED)
    gate, log, runner = gated()
    send_smp1(alice, bob, b"a")
    runner.kick("alice@x/1", bob)
    await settle()
    log.gone.add(id(bob))  # the account forgot the session
    gate.release()
    await settle()
    assert log.applied == []
    assert bob.data_to_send() == []
    assert runner.in_flight == 0


async def test_a_verdict_from_a_dropped_session_still_counts(keys) -> None:
    """The peer sent its last SMP message and went offline at once: the
    exchange is over, and its result is the user's to see."""
    alice, bob = secure_pair(keys, DEFERRED)
    for session in (alice, bob):
        session.policy = Policy()  # inline, up to alice's last step
    alice.smp_start(b"same")
    (one,) = alice.data_to_send()
    bob.receive(one)
    bob.smp_answer(b"same")
    (two,) = bob.data_to_send()
    alice.receive(two)
    (three,) = alice.data_to_send()
    bob.receive(three)
    (four,) = bob.data_to_send()
    alice.policy = DEFERRED
    assert alice.receive(four) == [ev.SMPPending()]
    gate, log, runner = gated()
    runner.kick("bob@x/1", alice)
    await settle()
    log.gone.add(id(alice))
    gate.release()
    await settle()
    assert [events for _, _, events in log.applied] == [
        [ev.SMPSucceeded(fingerprint=keys[1].public.fingerprint)]
    ]
    assert not alice.smp_busy


async def test_smp_work_in_flight_is_bounded_across_peers(keys) -> None:
    gate, log, runner = gated(max_in_flight=2)
    pairs = [secure_pair(keys, DEFERRED) for _ in range(4)]
    # Two throw-away accounts, then a second resource of the first.
    peers = ["m1@x/a", "m2@x/a", "m3@x/a", "m1@x/b"]
    for peer, (mallory, victim) in zip(peers, pairs, strict=True):
        send_smp1(mallory, victim, b"x")
        runner.kick(peer, victim)
    await settle()
    assert len(gate.held) == runner.in_flight == 2
    refused = [(peer, events) for peer, _, events in log.applied]
    assert refused == [("m3@x/a", [ev.SMPAborted()]), ("m1@x/b", [ev.SMPAborted()])]
    # The refused peers were told with an SMP abort (TLV 6).
    for mallory, victim in pairs[2:]:
        assert not victim.smp_busy
        (abort,) = victim.data_to_send()
        assert mallory.receive(abort) == [ev.SMPAborted()]
    while gate.held:
        gate.release()
        await settle()
    assert runner.in_flight == 0
    runner.close()


async def test_a_verification_that_matters_is_never_crowded_out(keys) -> None:
    """Throw-away accounts fill every slot; an SMP that our user takes part
    in (or with a trusted fingerprint) is still computed."""
    mattering = {"bob@x/phone"}
    gate, log, runner = gated(
        max_in_flight=2, priority=lambda peer, _s: peer in mattering
    )
    pairs = [secure_pair(keys, DEFERRED) for _ in range(3)]
    for peer, (mallory, victim) in zip(
        ["m1@x/a", "m2@x/a", "bob@x/phone"], pairs, strict=True
    ):
        send_smp1(mallory, victim, b"x")
        runner.kick(peer, victim)
    await settle()
    assert len(gate.held) == runner.in_flight == 3
    assert log.applied == []  # nobody refused
    while gate.held:
        gate.release()
        await settle()
    runner.close()


async def test_close_throws_away_what_is_under_way(keys) -> None:
    _alice, bob = secure_pair(keys, DEFERRED)
    gate, log, runner = gated()
    bob.smp_start(b"b")
    runner.kick("alice@x/1", bob)
    await settle()
    runner.close()
    gate.release()
    await settle()
    assert log.applied == []
    assert runner.in_flight == 0
