"""The ``xfer_otr`` plugin through ``<message/>`` stanzas, against a peer
that is a bare :class:`xfer.otr.account.Account`: the AKE (also started by a
whitespace tag), offers, digests and verdicts in TLV 8, what the plugin
refuses to act on, and peers that offer only OTR versions other than 3 (told
once, in plain text, and a set-up with them fails at once)."""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar
from xml.sax.saxutils import escape

import pytest

import xfer.xmpp.otr as otr_plugin
import xfer.xmpp.outbox as outbox_module
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase
from xfer.errors import NotSecure, PeerIncapable, TransferTimeout
from xfer.otr import Policy
from xfer.otr import events as ev
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.otr.data import encode_data
from xfer.otr.messages import WHITESPACE_BASE, WHITESPACE_V2, WHITESPACE_V3
from xfer.otr.session import MessageState
from xfer.otr.trust import SMPResult, TrustStore, Verification
from xfer.transfer.offer import (
    XFER_USE,
    TransferDigest,
    TransferOffer,
    TransferVerdict,
)
from xfer.xmpp import versions

if TYPE_CHECKING:
    from xfer.otr.session import Session

BARE_PEER = PEER.split("/")[0]
OTHER = "peer@example.org/phone"
OUR_TAG = 0x1111_1111
KEYS: list[PrivateKey] = []


def keys() -> list[PrivateKey]:
    """Ours and the peer's (a DSA key takes a while: made once)."""
    if not KEYS:
        KEYS.extend(PrivateKey.generate() for _ in range(2))
    return KEYS


def offer(n: int = 1, *, version: int = 2) -> TransferOffer:
    ident = {"file_id": bytes(32)} if version == 2 else {"sha256": bytes(32)}
    return TransferOffer(
        transfer_id=bytes([n]) * 16,
        salt=bytes(32),
        suite=1,
        chunk_size=65536,
        size=10,
        name="a.txt",
        **ident,
    )


class OTRCase(StanzaCase):
    config: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        ours, theirs = keys()
        self.trust = TrustStore()
        self.plugins = (
            (
                "xfer_otr",
                otr_plugin,
                {
                    "private_key": ours,
                    "instance_tag": OUR_TAG,
                    "trust_store": self.trust,
                    **self.config,
                },
            ),
        )
        super().setUp()
        self.otr = self.plugin("xfer_otr")
        self.peer = Account(theirs, our_tag=0x2222_2222, policy=Policy())
        self.their_fingerprint = theirs.public.fingerprint
        self.events: list[tuple[str, Any]] = []
        for name in (
            "xfer_otr_secure",
            "xfer_otr_smp_asked",
            "xfer_otr_smp_done",
            "xfer_otr_unsupported",
            "xfer_otr_message",
        ):
            self.xmpp.add_event_handler(
                name, lambda data, name=name: self.events.append((name, data))
            )

    # -- moving bodies between the stream and the peer -----------------------

    def deliver(self, body: str, *, frm: str = PEER, extra: str = "") -> None:
        """A chat message from ``frm`` reaches our client."""
        self.recv(
            f'<message type="chat" from="{frm}" to="{ME}">'
            f"<body>{escape(body)}</body>{extra}</message>"
        )

    def from_peer(self, *, frm: str = PEER, extra: str = "") -> int:
        """Deliver what the peer account queued; how many messages."""
        out = self.peer.data_to_send()
        for to, body in out:
            assert to == ME
            self.deliver(body, frm=frm, extra=extra)
        return len(out)

    def to_peer(self) -> list[ev.Event]:
        """Hand what our client sent to the peer account; its events."""
        events: list[ev.Event] = []
        for msg in self.all_sent():
            assert msg.name == "message"
            assert msg["to"].full == PEER
            events += self.peer.receive(ME, msg["body"])[1]
        return events

    def relay(self) -> list[ev.Event]:
        """Both ways until both sides are quiet; the peer's events."""
        events: list[ev.Event] = []
        for _ in range(8):
            events += self.to_peer()
            if not self.from_peer():
                break
        return events

    def secured(self) -> Session:
        task = self.start(self.otr.secure(PEER, timeout=5))
        self.relay()
        full, session = self.run_coro(task)
        assert full == PEER
        return session

    def peer_session(self) -> Session:
        session = self.peer.best(ME)
        assert session is not None
        return session


class TestAKE(OTRCase):
    def test_secure_completes_an_ake_over_messages(self) -> None:
        session = self.secured()
        assert session.their_fingerprint == self.their_fingerprint
        assert self.otr.fingerprint(PEER) == self.their_fingerprint
        assert self.otr.session(PEER) is session
        assert self.peer_session().their_fingerprint == keys()[0].public.fingerprint
        assert ("xfer_otr_secure", (PEER, self.their_fingerprint)) in self.events
        assert not self.otr.is_trusted(PEER)
        # A second call finds the session, and sends nothing.
        assert self.run_coro(self.otr.secure(BARE_PEER)) == (PEER, session)
        self.nothing_sent()

    def test_every_otr_message_carries_the_eme_marker_and_the_hints(self) -> None:
        self.start(self.otr.secure(PEER, timeout=5))
        msg = self.sent()
        assert msg["type"] == "chat"
        assert msg["body"].startswith("?OTR")
        encryption = msg.xml.find(f"{{{outbox_module.NS_EME}}}encryption")
        assert encryption is not None
        assert encryption.attrib == {"namespace": outbox_module.NS_OTR, "name": "OTR"}
        for hint in ("no-store", "no-copy"):
            assert msg.xml.find(f"{{{outbox_module.NS_HINTS}}}{hint}") is not None
        assert msg.xml.find(f"{{{outbox_module.NS_CARBONS}}}private") is not None

    def test_a_bare_jid_gets_a_query_and_the_answer_names_the_resource(self) -> None:
        task = self.start(self.otr.secure(BARE_PEER, timeout=5))
        query = self.sent()
        assert query["to"].full == BARE_PEER
        self.peer.receive(ME, query["body"])
        self.from_peer()
        self.relay()
        assert self.run_coro(task)[0] == PEER

    def test_no_answer_is_not_secure(self) -> None:
        with pytest.raises(NotSecure):
            self.run_coro(self.otr.secure(PEER, timeout=0.05))

    def test_the_peer_going_offline_drops_its_sessions(self) -> None:
        self.secured()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')
        assert self.otr.session(PEER) is None

    def forgotten(self) -> None:
        """We lose the session (the peer's presence says it left); the peer
        keeps its own."""
        self.secured()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')

    def test_an_offer_we_cannot_read_is_noted_and_starts_a_new_ake(self) -> None:
        self.forgotten()
        self.peer_session().extra_symmetric_key(XFER_USE, offer().encode())
        self.from_peer()
        assert self.otr.lost_offers(PEER)
        assert not self.otr.lost_offers(OTHER)
        commit = self.sent()
        assert commit["body"].startswith("?OTR:AAMC")  # a D-H Commit
        # A claim does not wait for an offer that is known to be lost.
        started = time.monotonic()
        assert self.claim_now(PEER) is None
        assert time.monotonic() - started < 30  # not the 60 s timeout

    def claim_now(self, peer: str) -> otr_plugin.ReceivedOffer | None:
        return self.run_coro(
            self.otr.claim_offer(peer, offer().transfer_id, timeout=60)
        )

    def test_other_unreadable_data_gets_an_otr_error(self) -> None:
        self.forgotten()
        self.peer_session().send("hello")
        self.from_peer()
        assert self.sent()["body"].startswith("?OTR Error:")
        assert not self.otr.lost_offers(PEER)


STAMP = 'stamp="2024-01-01T00:00:00Z"'
#: Stream management's delay on what it resends on a resumed stream: from
#: our own bare JID, and nothing else (a live message, seconds old).
RESENT = f'<delay xmlns="urn:xmpp:delay" from="{ME.split("/")[0]}" {STAMP}/>'
#: What a server stored carries: mod_offline's delay (from the domain), both
#: (Prosody, for a message that smacks handed to mod_offline, in either
#: order), XEP-0091's, one with no sender, or one nested deeper.
DELAYS = {
    "offline": f'<delay xmlns="urn:xmpp:delay" from="example.org" {STAMP}/>',
    "anonymous": f'<delay xmlns="urn:xmpp:delay" {STAMP}/>',
    "both": f'<delay xmlns="urn:xmpp:delay" from="{ME.split("/")[0]}" {STAMP}/>'
    f'<delay xmlns="urn:xmpp:delay" from="example.org" {STAMP}/>',
    "second": '<active xmlns="http://jabber.org/protocol/chatstates"/>'
    f'<delay xmlns="urn:xmpp:delay" from="example.org" {STAMP}/>',
    "legacy": (
        '<x xmlns="jabber:x:delay" from="example.org" stamp="20240101T00:00:00"/>'
    ),
    "nested": '<wrapper xmlns="urn:example:wrap">'
    f'<delay xmlns="urn:xmpp:delay" from="example.org" {STAMP}/></wrapper>',
}


class TestDelayed(OTRCase):
    def commit(self, extra: str) -> None:
        self.peer.session(ME).start_ake()
        self.from_peer(extra=extra)

    def forgotten(self) -> None:
        """We lose the session; the peer keeps its own."""
        self.secured()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')

    def test_a_delayed_commit_is_not_answered(self) -> None:
        for name, delay in DELAYS.items():
            with self.subTest(delay=name):
                self.commit(delay)
                self.nothing_sent()
                assert not self.otr._set_up.ake_under_way(PEER)

    def test_a_delayed_query_or_tag_starts_nothing(self) -> None:
        for body in ("?OTRv3?", "hi" + WHITESPACE_BASE + WHITESPACE_V3):
            self.deliver(body, extra=DELAYS["both"])
        self.nothing_sent()
        assert not self.otr._set_up.ake_under_way(PEER)

    def test_an_undelayed_commit_is_answered(self) -> None:
        self.commit("")
        assert self.sent()["body"].startswith("?OTR:AAMK")

    def test_a_commit_resent_on_a_resumed_stream_is_answered(self) -> None:
        # Stream management resends what we did not acknowledge before the
        # connection broke, stamped with our own JID alone: a key exchange
        # cut by a short outage goes on.
        self.commit(RESENT)
        assert self.sent()["body"].startswith("?OTR:AAMK")

    def test_delayed_ake_steps_leave_a_live_ake_and_a_session_alone(self) -> None:
        # The server keeps copies of the peer's AKE messages and plays them
        # back, delayed, in the middle of a new AKE and after it.
        self.peer.session(ME).start_ake()
        [(_, old_commit)] = self.peer.data_to_send()
        self.peer.forget(ME)
        task = self.start(self.otr.secure(PEER, timeout=5))
        self.deliver(old_commit, extra=DELAYS["offline"])
        self.relay()
        _, session = self.run_coro(task)
        ssid = session.ssid
        for body in (old_commit, "?OTRv3?", "x" + WHITESPACE_BASE + WHITESPACE_V3):
            self.deliver(body, extra=DELAYS["both"])
        self.nothing_sent()
        assert self.otr.session(PEER) is session
        assert session.ssid == ssid

    def test_a_delayed_data_message_of_the_live_session_is_read(self) -> None:
        session = self.secured()
        self.peer_session().send("resent on resumption")
        self.from_peer(extra=DELAYS["offline"])
        assert ("xfer_otr_message", (PEER, "resent on resumption")) in self.events
        assert self.otr.session(PEER) is session
        # A replayed copy of it (the counter did not increase) is dropped,
        # and not answered with an OTR error.
        self.peer_session().send("once")
        [(_, body)] = self.peer.data_to_send()
        self.deliver(body)
        self.deliver(body, extra=DELAYS["offline"])
        self.nothing_sent()
        texts = [e[1] for e in self.events if e[0] == "xfer_otr_message"]
        assert texts.count((PEER, "once")) == 1

    def test_a_delayed_end_of_the_live_conversation_counts(self) -> None:
        session = self.secured()
        self.peer_session().end()  # TLV 1, in a data message of this session
        self.from_peer(extra=DELAYS["offline"])
        self.nothing_sent()
        assert session.state is MessageState.FINISHED
        assert self.otr.session(PEER) is None

    def test_a_delayed_data_message_of_a_gone_session_is_dropped(self) -> None:
        # We lost the session; the peer's last offer was stored for us.
        self.forgotten()
        self.peer_session().extra_symmetric_key(XFER_USE, offer().encode())
        self.from_peer(extra=DELAYS["both"])
        self.nothing_sent()  # no OTR error, no new AKE
        assert not self.otr.lost_offers(PEER)
        assert not self.otr._set_up.ake_under_way(PEER)
        # With a new session, one from the old session is still dropped.
        stale = self.peer_session()
        stale.send("from the old session")
        [(_, old)] = self.peer.data_to_send()
        self.peer.forget(ME)
        self.secured()
        self.deliver(old, extra=DELAYS["offline"])
        self.nothing_sent()
        texts = [e[1] for e in self.events if e[0] == "xfer_otr_message"]
        assert (PEER, "from the old session") not in texts

    def test_non_chat_and_plain_messages_are_left_alone(self) -> None:
        self.peer.session(ME).start_ake()
        [(_, body)] = self.peer.data_to_send()
        self.recv(
            f'<message type="groupchat" from="{PEER}" to="{ME}">'
            f"<body>{body}</body></message>"
        )
        self.deliver("hi, no OTR here")
        self.nothing_sent()


class SecureCase(OTRCase):
    def setUp(self) -> None:
        super().setUp()
        self.session = self.secured()

    def peer_sends(self, payload: bytes) -> bytes:
        """The peer sends a TLV 8 with our use; its key."""
        key = self.peer_session().extra_symmetric_key(XFER_USE, payload)
        self.from_peer()
        return key

    def claim(self, peer: str, n: int = 1) -> otr_plugin.ReceivedOffer | None:
        return self.run_coro(
            self.otr.claim_offer(peer, offer(n).transfer_id, timeout=0.05)
        )


class TestOffers(SecureCase):
    config: ClassVar[dict[str, Any]] = {"untrusted_offers": 1}

    def test_an_offer_is_claimed_once_and_only_by_its_sender(self) -> None:
        key = self.peer_sends(offer().encode())
        assert self.claim(OTHER) is None
        assert self.claim(BARE_PEER) is None
        got = self.claim(PEER)
        assert got is not None
        assert (got.peer, got.offer, got.key) == (PEER, offer(), key)
        assert got.fingerprint == self.their_fingerprint
        assert not got.trusted
        assert self.claim(PEER) is None

    def test_a_version_1_offer_is_still_taken(self) -> None:
        old = offer(version=1)
        key = self.peer_sends(old.encode())
        got = self.claim(PEER)
        assert got is not None
        assert (got.offer, got.key) == (old, key)
        assert got.offer.sha256 == bytes(32)

    def test_a_claim_waits_for_the_offer(self) -> None:
        task = self.start(self.otr.claim_offer(PEER, offer().transfer_id, timeout=5))
        assert not task.done()
        self.peer_sends(offer().encode())
        got = self.run_coro(task)
        assert got is not None
        assert got.offer == offer()

    def test_a_transfer_id_is_used_once(self) -> None:
        self.peer_sends(offer().encode())
        assert self.claim(PEER) is not None
        self.peer_sends(offer().encode())
        self.peer_sends(offer().encode())
        assert self.claim(PEER) is not None
        assert self.claim(PEER) is None

    def test_untrusted_offers_beyond_the_quota_are_refused(self) -> None:
        self.peer_sends(offer(1).encode())
        self.peer_sends(offer(2).encode())
        assert not self.otr.refused_offer(offer(1).transfer_id)
        assert self.otr.refused_offer(offer(2).transfer_id)
        assert self.claim(PEER, 2) is None
        assert self.claim(PEER, 1) is not None

    def test_trusted_offers_have_no_such_quota(self) -> None:
        self.trust.trust(PEER, self.their_fingerprint, Verification.MANUAL, now=0)
        assert self.otr.is_trusted(PEER)
        for n in (1, 2, 3):
            self.peer_sends(offer(n).encode())
        got = [self.claim(PEER, n) for n in (1, 2, 3)]
        assert all(g is not None and g.trusted for g in got)

    def test_a_malformed_payload_is_dropped(self) -> None:
        self.peer_sends(b"\x01junk")
        assert self.otr._offers.unclaimed == {}

    def test_send_offer_reaches_the_peer_with_the_same_key(self) -> None:
        key = self.otr.send_offer(
            self.session, offer(), fingerprint=self.their_fingerprint
        )
        [got] = [e for e in self.to_peer() if isinstance(e, ev.SymmetricKeyReceived)]
        assert (got.use, got.data, got.key) == (XFER_USE, offer().encode(), key)

    def test_send_offer_refuses_a_session_whose_fingerprint_changed(self) -> None:
        with pytest.raises(NotSecure):
            self.otr.send_offer(self.session, offer(), fingerprint=bytes(20))
        self.nothing_sent()

    def test_send_offer_refuses_an_ended_session(self) -> None:
        self.otr.end(PEER)
        self.all_sent()
        with pytest.raises(NotSecure):
            self.otr.send_offer(
                self.session, offer(), fingerprint=self.their_fingerprint
            )


class TestVerdicts(SecureCase):
    def expect(self, peer: str, fingerprint: bytes) -> asyncio.Future[TransferVerdict]:
        async def expect() -> asyncio.Future[TransferVerdict]:
            return self.otr.expect_verdict(peer, offer().transfer_id, fingerprint)

        return self.run_coro(expect())

    def verdict(self, stored: bool = True) -> TransferVerdict:
        return TransferVerdict(transfer_id=offer().transfer_id, stored=stored)

    def test_the_verdict_of_the_peer_offered_to_counts(self) -> None:
        waiter = self.expect(PEER, self.their_fingerprint)
        self.peer_sends(self.verdict().encode())
        assert waiter.done()
        assert waiter.result() == self.verdict()

    def test_a_verdict_from_another_fingerprint_is_ignored(self) -> None:
        waiter = self.expect(PEER, bytes(20))
        self.peer_sends(self.verdict().encode())
        assert not waiter.done()

    def test_a_verdict_from_another_account_is_ignored(self) -> None:
        waiter = self.expect("else@example.org/x", self.their_fingerprint)
        self.peer_sends(self.verdict().encode())
        assert not waiter.done()

    def test_a_forgotten_verdict_is_cancelled(self) -> None:
        waiter = self.expect(PEER, self.their_fingerprint)
        self.otr.forget_verdict(offer().transfer_id)
        assert waiter.cancelled()
        self.peer_sends(self.verdict().encode())  # nobody waits: no harm

    def test_send_verdict_goes_back_over_the_offer_session(self) -> None:
        self.peer_sends(offer().encode())
        got = self.claim(PEER)
        assert got is not None
        self.otr.send_verdict(got, self.verdict(stored=False))
        [sent] = [e for e in self.to_peer() if isinstance(e, ev.SymmetricKeyReceived)]
        assert TransferVerdict.decode(sent.data) == self.verdict(stored=False)

    def test_send_verdict_without_a_session_is_not_secure(self) -> None:
        self.peer_sends(offer().encode())
        got = self.claim(PEER)
        assert got is not None
        self.otr.end(PEER)
        with pytest.raises(NotSecure):
            self.otr.send_verdict(got, self.verdict())


class TestDigests(SecureCase):
    """The sender's digest after the sealed stream: it counts only from the
    account and fingerprint of the offer, for a transfer waited for."""

    def expect(self, peer: str, fingerprint: bytes) -> asyncio.Future[TransferDigest]:
        async def expect() -> asyncio.Future[TransferDigest]:
            return self.otr.expect_digest(peer, offer().transfer_id, fingerprint)

        return self.run_coro(expect())

    def digest(self, n: int = 1) -> TransferDigest:
        return TransferDigest(
            transfer_id=offer(n).transfer_id, sha256=b"\x05" * 32, size=10
        )

    def test_the_digest_of_the_peer_of_the_offer_counts(self) -> None:
        waiter = self.expect(BARE_PEER, self.their_fingerprint)
        self.peer_sends(self.digest().encode())
        assert waiter.done()
        assert waiter.result() == self.digest()
        # A digest is no offer: nothing waits to be claimed.
        assert self.otr._offers.unclaimed == {}

    def test_a_digest_from_another_key_is_ignored(self) -> None:
        waiter = self.expect(PEER, bytes(20))
        self.peer_sends(self.digest().encode())
        assert not waiter.done()

    def test_a_digest_from_another_account_is_ignored(self) -> None:
        waiter = self.expect("else@example.org/x", self.their_fingerprint)
        self.peer_sends(self.digest().encode())
        assert not waiter.done()

    def test_a_digest_for_another_transfer_is_ignored(self) -> None:
        waiter = self.expect(PEER, self.their_fingerprint)
        self.peer_sends(self.digest(2).encode())
        assert not waiter.done()
        self.peer_sends(self.digest(1).encode())
        assert waiter.result() == self.digest(1)

    def test_a_forgotten_digest_is_cancelled(self) -> None:
        waiter = self.expect(PEER, self.their_fingerprint)
        self.otr.forget_digest(offer().transfer_id)
        assert waiter.cancelled()
        self.peer_sends(self.digest().encode())  # nobody waits: no harm

    def test_send_digest_reaches_the_fingerprint_of_the_offer(self) -> None:
        self.otr.send_digest(
            self.session, self.digest(), peer=PEER, fingerprint=self.their_fingerprint
        )
        [sent] = [e for e in self.to_peer() if isinstance(e, ev.SymmetricKeyReceived)]
        assert (sent.use, TransferDigest.decode(sent.data)) == (XFER_USE, self.digest())

    def test_send_digest_to_another_fingerprint_is_not_secure(self) -> None:
        with pytest.raises(NotSecure):
            self.otr.send_digest(
                self.session, self.digest(), peer=PEER, fingerprint=bytes(20)
            )
        self.nothing_sent()

    def test_send_digest_without_a_session_is_not_secure(self) -> None:
        self.otr.end(PEER)
        self.all_sent()
        with pytest.raises(NotSecure):
            self.otr.send_digest(
                self.session,
                self.digest(),
                peer=PEER,
                fingerprint=self.their_fingerprint,
            )


class TestQuestions(SecureCase):
    config: ClassVar[dict[str, Any]] = {
        "smp_executor": ThreadPoolExecutor(1, thread_name_prefix="test-smp")
    }

    @classmethod
    def tearDownClass(cls) -> None:
        cls.config["smp_executor"].shutdown()

    def ask(self, question: str) -> None:
        self.peer_session().smp_start(b"secret", question)
        self.from_peer()
        # Our SMP step runs in the executor; the question comes with it.
        self.until(lambda: any(n == "xfer_otr_smp_asked" for n, _ in self.events))

    def test_next_question_with_peer_takes_only_that_peers(self) -> None:
        self.ask("our cat's name?")
        assert ("xfer_otr_smp_asked", (PEER, "our cat's name?")) in self.events
        with pytest.raises(TransferTimeout):
            self.run_coro(self.otr.next_question(0.05, peer="someone@example.org"))
        got = self.run_coro(self.otr.next_question(1, peer=BARE_PEER))
        assert got == (PEER, "our cat's name?")
        with pytest.raises(TransferTimeout):
            self.run_coro(self.otr.next_question(0.05))

    def test_a_waiting_next_question_wakes_on_the_question(self) -> None:
        task = self.start(self.otr.next_question(5, peer=PEER))
        assert not task.done()
        self.ask("where did we meet?")
        assert self.run_coro(task) == (PEER, "where did we meet?")

    def run_smp(self, task: Any) -> list[ev.Event]:
        """Relay until ``task`` (our side of the SMP) is done; the peer's events."""
        events: list[ev.Event] = []

        def done() -> bool:
            events.extend(self.relay())
            return task.done()

        self.until(done)
        return events

    def test_answer_with_the_same_secret_trusts_the_fingerprint(self) -> None:
        saved: list[TrustStore] = []
        self.otr.config["on_trust_change"] = saved.append
        self.ask("the secret?")
        who, _ = self.run_coro(self.otr.next_question(1))
        task = self.start(self.otr.answer(who, b"secret", timeout=10))
        self.run_smp(task)
        assert self.run_coro(task) is SMPResult.SUCCEEDED
        assert self.otr.is_trusted(PEER)
        assert saved == [self.trust]
        assert ("xfer_otr_smp_done", (PEER, SMPResult.SUCCEEDED)) in self.events

    def test_verify_with_another_secret_fails_and_trusts_nothing(self) -> None:
        task = self.start(self.otr.verify(PEER, b"mine", question="q", timeout=10))
        events = self.run_smp_peer(b"theirs", task)
        assert self.run_coro(task) is SMPResult.FAILED
        assert not self.otr.is_trusted(PEER)
        assert any(isinstance(e, ev.SMPFailed) for e in events)

    def run_smp_peer(self, secret: bytes, task: Any) -> list[ev.Event]:
        events: list[ev.Event] = []

        def asked() -> bool:
            events.extend(self.to_peer())
            return any(isinstance(e, ev.SMPAsked) for e in events)

        self.until(asked)
        self.peer_session().smp_answer(secret)
        return events + self.run_smp(task)


# -- whitespace tags and peers without OTR version 3 ------------------------------

TAG_V2 = WHITESPACE_BASE + WHITESPACE_V2
TAG_V3 = WHITESPACE_BASE + WHITESPACE_V2 + WHITESPACE_V3
REPLY = "xfer needs OTR version 3 to exchange files; your client offers only version 2."


def v2_commit() -> str:
    """A version 2 D-H Commit (what a v2-only libotr starts its AKE with)."""
    raw = b"\x00\x02\x02" + encode_data(b"g" * 192) + encode_data(b"h" * 32)
    return "?OTR:" + base64.b64encode(raw).decode() + "."


class TestWhitespaceTags(OTRCase):
    def test_a_tagged_plain_message_starts_the_ake(self) -> None:
        self.deliver("hello" + TAG_V3)
        commit = self.sent()
        assert commit["to"].full == PEER
        assert commit["body"].startswith("?OTR:AAMC")  # our D-H Commit
        self.peer.receive(ME, commit["body"])
        self.from_peer()
        self.relay()
        assert self.otr.fingerprint(PEER) == self.their_fingerprint
        assert ("xfer_otr_secure", (PEER, self.their_fingerprint)) in self.events

    def test_a_tag_does_not_restart_an_encrypted_conversation(self) -> None:
        session = self.secured()
        ssid = session.ssid
        self.deliver("forged" + TAG_V3)
        self.nothing_sent()
        assert self.otr.session(PEER) is session
        assert session.ssid == ssid

    def test_the_text_around_a_tag_is_not_shown_as_a_message(self) -> None:
        # Plain text is never a message of the private conversation.
        self.deliver("hello" + TAG_V3)
        assert not [e for e in self.events if e[0] == "xfer_otr_message"]


class TestOldVersions(OTRCase):
    config: ClassVar[dict[str, Any]] = {"clock": lambda: TestOldVersions.now}
    now = 1000.0

    def setUp(self) -> None:
        TestOldVersions.now = 1000.0
        super().setUp()

    def unsupported(self) -> list[Any]:
        return [data for name, data in self.events if name == "xfer_otr_unsupported"]

    def test_a_v2_query_is_answered_once_in_plain_text(self) -> None:
        self.deliver("?OTRv2?")
        (reply,) = self.all_sent()
        assert reply["to"].full == PEER
        assert reply["type"] == "chat"
        assert reply["body"] == REPLY
        assert reply.xml.find(f"{{{outbox_module.NS_EME}}}encryption") is None
        assert self.unsupported() == [(PEER, frozenset({2}))]
        got = self.run_coro(self.otr.next_unsupported(1))
        assert got == (PEER, frozenset({2}))
        # Once per account: the same client, another of its clients, other forms.
        for body in ("?OTRv2?", "hi" + TAG_V2, v2_commit()):
            self.deliver(body)
            self.deliver(body, frm=OTHER)
        self.nothing_sent()
        assert len(self.unsupported()) == 1
        with pytest.raises(TransferTimeout):
            self.run_coro(self.otr.next_unsupported(0.05))

    def test_every_form_of_an_offer_without_v3_is_answered(self) -> None:
        offers = [
            ("?OTRv2?", {2}),
            ("?OTR?v2?", {1, 2}),
            ("?OTRv2?\nAlice has requested a private conversation", {2}),
            ("hi" + TAG_V2, {2}),
            (TAG_V2, {2}),
            (v2_commit(), {2}),
        ]
        for n, (body, offered) in enumerate(offers):
            frm = f"user{n}@example.org/x"
            self.deliver(body, frm=frm)
            (reply,) = self.all_sent()
            assert reply["to"].full == frm
            assert reply["body"] == versions.reply_text(offered)
            assert self.unsupported()[-1] == (frm, frozenset(offered))
        assert versions.reply_text({2}) == REPLY

    def test_a_tag_offering_v1_and_v2_names_both(self) -> None:
        v1 = "\x20\x09\x20\x09\x20\x20\x09\x20"
        self.deliver("hi" + WHITESPACE_BASE + v1 + WHITESPACE_V2)
        (reply,) = self.all_sent()
        assert reply["body"].endswith("offers only versions 1 and 2.")

    def test_the_account_is_told_again_after_a_while(self) -> None:
        self.deliver("?OTRv2?")
        assert len(self.all_sent()) == 1
        TestOldVersions.now += versions.REMEMBER + 1
        self.deliver("?OTRv2?")
        assert len(self.all_sent()) == 1
        assert len(self.unsupported()) == 2

    def test_a_flood_from_many_accounts_is_bounded(self) -> None:
        """A server forging v2 queries from ever new accounts gets a few
        replies a minute, and makes us remember a bounded number."""
        for n in range(200):
            self.deliver("?OTRv2?", frm=f"forged{n}@example.org/x")
        assert len(self.all_sent()) == versions.MAX_REPLIES
        assert len(self.unsupported()) == versions.MAX_REPLIES
        assert len(self.otr._old._seen) == versions.MAX_REMEMBERED
        TestOldVersions.now += versions.REPLY_WINDOW
        self.deliver("?OTRv2?", frm="late@example.org/x")
        assert len(self.all_sent()) == 1

    def test_a_waiting_secure_fails_at_once(self) -> None:
        task = self.start(self.otr.secure(PEER, timeout=30))
        assert self.sent()["body"].startswith("?OTR:AAMC")
        self.deliver("?OTRv2?")
        with pytest.raises(PeerIncapable) as caught:
            self.run_coro(asyncio.wait_for(task, 10))  # not secure's 30 s
        assert caught.value.lacks == {PEER: ("OTR version 3",)}
        assert "OTR version 3" in str(caught.value)

    def test_a_secure_with_the_bare_jid_fails_when_a_client_says_v2(self) -> None:
        task = self.start(self.otr.secure(BARE_PEER, timeout=30))
        assert self.sent()["body"] == "?OTRv3?"
        self.deliver("hi" + TAG_V2, frm=OTHER)
        with pytest.raises(PeerIncapable) as caught:
            self.run_coro(asyncio.wait_for(task, 10))  # not secure's 30 s
        assert caught.value.lacks == {OTHER: ("OTR version 3",)}

    def test_secure_fails_at_once_with_a_known_v2_client(self) -> None:
        self.deliver("?OTRv2?")
        self.all_sent()
        with pytest.raises(PeerIncapable):
            self.run_coro(self.otr.secure(PEER, timeout=30))
        self.nothing_sent()
        # Its other clients may speak version 3: they are asked.
        with pytest.raises(NotSecure) as caught:
            self.run_coro(self.otr.secure(OTHER, timeout=0.05))
        assert not isinstance(caught.value, PeerIncapable)

    def test_a_client_gone_offline_is_forgotten(self) -> None:
        self.deliver("?OTRv2?")
        self.all_sent()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')
        with pytest.raises(NotSecure) as caught:
            self.run_coro(self.otr.secure(PEER, timeout=0.05))
        assert not isinstance(caught.value, PeerIncapable)

    def test_v2_offers_leave_an_encrypted_session_alone(self) -> None:
        session = self.secured()
        ssid = session.ssid
        for body in ("?OTRv2?", "?OTR?v2?", "forged" + TAG_V2, v2_commit()):
            self.deliver(body)
        self.nothing_sent()
        assert self.unsupported() == []
        assert self.otr.session(PEER) is session
        assert session.ssid == ssid
        assert self.run_coro(self.otr.secure(PEER)) == (PEER, session)
        self.peer_session().send("still private")
        self.from_peer()
        assert ("xfer_otr_message", (PEER, "still private")) in self.events

    def test_an_offline_stored_v2_query_is_ignored(self) -> None:
        self.deliver(
            "?OTRv2?",
            extra='<delay xmlns="urn:xmpp:delay" from="example.org" '
            'stamp="2024-01-01T00:00:00Z"/>',
        )
        self.nothing_sent()
        assert self.unsupported() == []
