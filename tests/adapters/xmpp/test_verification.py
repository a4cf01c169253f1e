"""Honest SMP in the ``xfer_otr`` plugin, against a peer that is a bare
:class:`xfer.otr.account.Account` over ``<message/>`` stanzas: what each
outcome does to the trust store (and that it is saved), that an abort is
told apart from a failure, and that every wait honours its timeout and
gives the exchange up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from tests.adapters.xmpp.slix import PEER
from tests.adapters.xmpp.test_otr import SecureCase
from xfer.errors import TransferTimeout, VerificationTimeout
from xfer.otr import events as ev
from xfer.otr.trust import SMPResult, TrustStore, Verification

BARE_PEER = PEER.split("/")[0]


class VerifyCase(SecureCase):
    config: ClassVar[dict[str, Any]] = {}

    @classmethod
    def setUpClass(cls) -> None:
        # SMP steps in a thread (no worker process to start), one per class.
        cls.config = {"smp_executor": ThreadPoolExecutor(1)}

    @classmethod
    def tearDownClass(cls) -> None:
        cls.config["smp_executor"].shutdown()

    def setUp(self) -> None:
        super().setUp()
        self.saved: list[bytes] = []
        self.otr.config["on_trust_change"] = lambda store: self.saved.append(
            store.to_json()
        )

    def stored(self) -> TrustStore:
        """The trust store as last saved through ``on_trust_change``."""
        assert self.saved, "the trust store was never saved"
        return TrustStore.from_json(self.saved[-1])

    def results(self) -> list[SMPResult]:
        return [data[1] for name, data in self.events if name == "xfer_otr_smp_done"]

    def peer_until(self, kind: type[ev.Event]) -> list[ev.Event]:
        """Hand our messages to the peer until it reports ``kind``; its events."""
        events: list[ev.Event] = []

        def seen() -> bool:
            events.extend(self.to_peer())
            return any(isinstance(e, kind) for e in events)

        self.until(seen)
        return events

    def run_smp(self, task: Any) -> list[ev.Event]:
        """Relay both ways until ``task`` (our side) is done; the peer's events."""
        events: list[ev.Event] = []

        def done() -> bool:
            events.extend(self.relay())
            return task.done()

        self.until(done)
        return events

    def verify(self, ours: bytes, theirs: bytes) -> SMPResult:
        """We ask, the peer answers with ``theirs``: our result."""
        task = self.start(self.otr.verify(PEER, ours, question="q", timeout=10))
        self.peer_until(ev.SMPAsked)
        self.peer_session().smp_answer(theirs)
        self.run_smp(task)
        return self.run_coro(task)

    def trust_by_hand(self) -> None:
        self.trust.trust(PEER, self.their_fingerprint, Verification.MANUAL, now=1)

    def ask(self) -> None:
        """The peer asks; our side takes its question."""
        self.peer_session().smp_start(b"secret", "the secret?")
        self.from_peer()
        self.until(lambda: any(n == "xfer_otr_smp_asked" for n, _ in self.events))
        assert self.run_coro(self.otr.next_question(1, peer=PEER)) == (
            PEER,
            "the secret?",
        )


class TestFailureRemovesTrust(VerifyCase):
    def test_a_failed_smp_removes_an_earlier_smp_trust_and_saves_it(self) -> None:
        assert self.verify(b"same", b"same") is SMPResult.SUCCEEDED
        entry = self.stored().entry(BARE_PEER, self.their_fingerprint)
        assert entry is not None
        assert entry.how is Verification.SMP
        result = self.verify(b"mine", b"theirs")
        assert result is SMPResult.FAILED
        assert not result  # as the bool it used to be
        assert not self.otr.is_trusted(PEER)
        assert not self.stored().is_trusted(BARE_PEER, self.their_fingerprint)
        assert self.results() == [SMPResult.SUCCEEDED, SMPResult.FAILED]

    def test_a_failed_smp_removes_a_trust_given_by_hand(self) -> None:
        self.trust_by_hand()
        assert self.verify(b"mine", b"theirs") is SMPResult.FAILED
        assert not self.otr.is_trusted(PEER)
        assert not self.stored().is_trusted(BARE_PEER, self.their_fingerprint)

    def test_a_failed_answer_removes_trust_too(self) -> None:
        self.trust_by_hand()
        self.ask()
        task = self.start(self.otr.answer(PEER, b"wrong", timeout=10))
        self.run_smp(task)
        assert self.run_coro(task) is SMPResult.FAILED
        assert not self.otr.is_trusted(PEER)
        assert not self.stored().is_trusted(BARE_PEER, self.their_fingerprint)


class TestAbort(VerifyCase):
    def test_the_peers_abort_is_an_abort_and_keeps_trust(self) -> None:
        assert self.verify(b"same", b"same") is SMPResult.SUCCEEDED
        saves = len(self.saved)
        task = self.start(self.otr.verify(PEER, b"same", timeout=10))
        self.peer_until(ev.SMPAsked)
        self.peer_session().smp_abort()  # TLV 6
        self.from_peer()
        self.until(task.done)
        assert self.run_coro(task) is SMPResult.ABORTED
        assert self.otr.is_trusted(PEER)
        entry = self.trust.entry(PEER, self.their_fingerprint)
        assert entry is not None
        assert entry.how is Verification.SMP
        assert len(self.saved) == saves  # nothing to save
        assert self.results()[-1] is SMPResult.ABORTED

    def test_a_question_withdrawn_before_the_answer_is_aborted(self) -> None:
        self.trust_by_hand()
        self.ask()
        self.peer_session().smp_abort()
        self.from_peer()
        self.until(lambda: SMPResult.ABORTED in self.results())
        result = self.run_coro(self.otr.answer(PEER, b"secret", timeout=10))
        assert result is SMPResult.ABORTED
        assert self.otr.is_trusted(PEER)
        assert self.all_sent() == []  # no answer went out

    def test_a_withdrawn_question_that_nobody_took_is_never_given(self) -> None:
        self.peer_session().smp_start(b"secret", "the secret?")
        self.from_peer()
        self.until(lambda: any(n == "xfer_otr_smp_asked" for n, _ in self.events))
        self.peer_session().smp_abort()
        self.from_peer()
        self.until(lambda: SMPResult.ABORTED in self.results())
        with pytest.raises(VerificationTimeout):
            self.run_coro(self.otr.next_question(0.05, peer=PEER))

    def test_the_peer_ending_the_conversation_aborts_our_verification(self) -> None:
        task = self.start(self.otr.verify(PEER, b"same", timeout=10))
        self.peer_until(ev.SMPAsked)
        self.peer_session().end()  # TLV 1, no SMP abort
        self.from_peer()
        self.until(task.done)
        assert self.run_coro(task) is SMPResult.ABORTED

    def test_ending_our_conversation_tells_the_peer_the_smp_is_aborted(self) -> None:
        task = self.start(self.otr.verify(PEER, b"same", timeout=10))
        self.peer_until(ev.SMPAsked)
        self.otr.end(PEER)
        events = self.to_peer()
        assert ev.SMPAborted() in events
        assert ev.GoneInsecure() in events
        assert self.run_coro(task) is SMPResult.ABORTED


class TestTimeouts(VerifyCase):
    def test_verify_gives_up_after_its_timeout_and_tells_the_peer(self) -> None:
        self.trust_by_hand()
        # The timeout runs from the call: our first SMP step (computed in
        # the executor, under 0.1 s on an idle machine, a few times that on
        # a loaded one) must reach the peer well before it runs out.
        task = self.start(self.otr.verify(PEER, b"same", timeout=2))
        self.peer_until(ev.SMPAsked)  # the peer never answers
        self.until(task.done)
        with pytest.raises(VerificationTimeout) as caught:
            self.run_coro(task)
        assert str(caught.value) == f"no answer from {PEER} within 2 s"
        assert (caught.value.peer, caught.value.timeout) == (PEER, 2)
        assert isinstance(caught.value, TransferTimeout)  # as before
        assert ev.SMPAborted() in self.to_peer()
        assert self.otr.is_trusted(PEER)

    def test_answer_gives_up_after_its_timeout_and_tells_the_peer(self) -> None:
        self.ask()
        task = self.start(self.otr.answer(PEER, b"secret", timeout=0.3))
        # Our SMP 2 goes out; the peer's SMP 3 never comes back.
        self.until(task.done)
        with pytest.raises(VerificationTimeout) as caught:
            self.run_coro(task)
        assert str(caught.value) == f"no answer from {PEER} within 0.3 s"
        assert ev.SMPAborted() in self.to_peer()

    def test_waiting_for_a_question_honours_its_timeout(self) -> None:
        with pytest.raises(VerificationTimeout) as caught:
            self.run_coro(self.otr.next_question(0.2, peer=PEER))
        assert str(caught.value) == f"{PEER} did not ask to verify within 0.2 s"
        with pytest.raises(VerificationTimeout, match="nobody asked to verify"):
            self.run_coro(self.otr.next_question(0.05))
