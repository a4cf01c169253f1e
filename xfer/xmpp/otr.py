"""OTR v3 over XMPP ``<message/>``: the ``xfer_otr`` slixmpp plugin.

The sans-I/O engine (:mod:`xfer.otr`) does the protocol; this adapter moves
its message bodies in and out of ``<message type='chat'/>`` stanzas
(``spec/otr.md`` section 2) and keeps what a file transfer needs:

* :meth:`XferOTR.secure` brings a session with a peer to ENCRYPTED (a D-H
  Commit to a full JID, a query to a bare one, whose answer names the
  resource) and returns the peer's full JID and fingerprint; the set-ups
  under way and their waiters are kept by
  :class:`~xfer.xmpp.securing.Securing`, which the plugin owns;
* :meth:`XferOTR.send_offer` sends a transfer offer in TLV 8 over exactly
  the session whose fingerprint the caller checked, and returns the extra
  symmetric key of that very message;
* offers received in TLV 8 wait in a bounded table until the Jingle session
  that names their transfer id claims them (:meth:`XferOTR.claim_offer`);
  offers from fingerprints that are not trusted have a small quota of their
  own, so that they cannot crowd out trusted ones;
* after the sealed stream, the sender's digest of the file follows in TLV 8
  (:meth:`XferOTR.send_digest`, :meth:`XferOTR.expect_digest`), and the
  receiver's verdict on a transfer comes back in TLV 8 too
  (:meth:`XferOTR.send_verdict`, :meth:`XferOTR.expect_verdict`): each
  counts only from the account and the fingerprint of the offer;
* text a peer sends inside OTR is raised as the event ``xfer_otr_message``
  and handed to :attr:`XferOTR.on_text` (``xfer_transfer`` makes it a
  rate-limited notice, :mod:`xfer.notices`).

Those offers, digests and verdicts are kept by :class:`~xfer.xmpp.offers.OfferTable`,
which the plugin owns and hands every TLV 8 of ours; the plugin's methods
above delegate to it.

A message that waited at a server (any delay, :mod:`xfer.xmpp.delay`) never
starts, answers or restarts a key exchange (:meth:`XferOTR._on_delayed`).

Besides OTR messages (bodies that start with ``?OTR``), plain messages that
carry a whitespace tag reach the engine, which starts the AKE when the tag
offers version 3 (``spec/otr.md`` section 1); every other plain message is
dropped unread. A peer that offers only older versions (a query, a tag, a
version 2 D-H Commit) is told in one plain message why nothing happens, and
so is our user (event ``xfer_otr_unsupported``, :meth:`XferOTR.next_unsupported`);
a set-up waiting for it fails at once. :class:`~xfer.xmpp.versions.OldClients`
keeps that bounded and rate-limited.

The verifications our user takes part in (SMP: :meth:`XferOTR.verify`,
:meth:`XferOTR.next_question`, :meth:`XferOTR.answer`) and what their
outcomes do to the trust store are kept by
:class:`~xfer.xmpp.verification.Verifier`, which the plugin owns and hands
every SMP event; those methods delegate to it.

SMP never runs on the event loop: one step is up to about two dozen 1536-bit
exponentiations (a quarter of a second in CPython, whose ``pow`` holds the
GIL throughout), and anyone who finishes an AKE can send SMP messages. The
sessions defer their SMP steps (``Policy.defer_smp``) and
:class:`~xfer.xmpp.smp.SMPRunner` computes them in a worker process, one
step per session at a time and a few in all; see ``spec/otr.md`` section 2,
"Limits".

Every OTR message carries the XEP-0380 marker for OTR and the hints that
keep it out of archives and carbons, and an id of our own: a message error
counts as a bounce only if it names one of ours, from where it went
(:class:`~xfer.xmpp.outbox.Outbox`).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, ClassVar

from slixmpp.plugins.base import BasePlugin
from slixmpp.stanza import Message

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr import events as ev
from xfer.otr.account import Account
from xfer.otr.messages import WHITESPACE_BASE
from xfer.otr.session import MessageState, Policy
from xfer.otr.smp import SMPState
from xfer.otr.trust import TrustStore
from xfer.transfer.offer import XFER_USE
from xfer.transfer.share import is_share_payload
from xfer.xmpp.delay import DATA_PREFIX, is_delayed, read_delayed
from xfer.xmpp.offers import MAX_UNTRUSTED_OFFERS, OFFER_TTL, OfferTable, ReceivedOffer
from xfer.xmpp.outbox import Outbox
from xfer.xmpp.securing import Securing
from xfer.xmpp.smp import MAX_SMP_IN_FLIGHT, SMPRunner
from xfer.xmpp.verification import MAX_QUESTIONS, Verifier
from xfer.xmpp.versions import OldClients, reply_text

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.otr.crypto import PrivateKey
    from xfer.otr.session import Session
    from xfer.otr.trust import SMPResult
    from xfer.transfer.offer import TransferDigest, TransferOffer, TransferVerdict

__all__ = ["MAX_QUESTIONS", "ReceivedOffer", "XferOTR"]

log = logging.getLogger(__name__)

#: How often idle OTR sessions are dropped (seconds; ``Account.expire``).
EXPIRE_EVERY = 60.0


class XferOTR(BasePlugin):
    """``client.register_plugin("xfer_otr", {...}, module=xfer.xmpp.otr)``.

    Config: ``private_key`` (our long-term DSA key; required),
    ``instance_tag`` (ours, persistent), ``trust_store`` (a
    :class:`~xfer.otr.trust.TrustStore`; SMP outcomes are recorded in it:
    see :meth:`~xfer.otr.trust.TrustStore.record_smp`),
    ``on_trust_change`` (called after the store changed, to save it),
    ``trust_fresh`` (called before an offer's fingerprint is judged: reads
    the store again if it changed on disk; False trusts no key),
    ``untrusted_offers`` (unclaimed offers from untrusted fingerprints kept
    at most, in all; 0 refuses them at once).
    """

    name = "xfer_otr"
    description = "OTR v3 over <message/> (xfer)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {
        "private_key": None,
        "instance_tag": None,
        "trust_store": None,
        "on_trust_change": None,
        "trust_fresh": None,
        "untrusted_offers": MAX_UNTRUSTED_OFFERS,
        "clock": time.monotonic,
        "smp_executor": None,
        "smp_in_flight": MAX_SMP_IN_FLIGHT,
    }

    def plugin_init(self) -> None:
        self._account: Account | None = None
        self.trust: TrustStore = TrustStore()
        self._outbox = Outbox(self.xmpp)
        self._old = OldClients(clock=lambda: self.config["clock"]())  # noqa: PLW0108
        self._set_up = Securing(
            account=lambda: self.account,
            trust=lambda: self.trust,
            flush=self._flush,
            old_otr=self._old.known,
        )
        # Looked up at each call, not bound now: set_identity sets the account
        # and may replace the trust store, and the config may change (the
        # transfer plugin sets untrusted_offers).
        self._offers = OfferTable(
            flush=self._flush,
            sessions=lambda peer: self.account.sessions(peer),  # noqa: PLW0108
            trusted=self._trusted,
            lost=self.lost_offers,
            clock=lambda: self.config["clock"](),  # noqa: PLW0108
            untrusted_quota=lambda: self.config["untrusted_offers"],
        )
        self._unreadable: dict[str, float] = {}
        self._smp = SMPRunner(
            apply=self._smp_applied,
            alive=self._holds,
            executor=self.config["smp_executor"],
            max_in_flight=self.config["smp_in_flight"],
            priority=lambda peer, s: self._verifier.matters(peer, s),  # noqa: PLW0108
        )
        self._verifier = Verifier(
            account=lambda: self.account,
            trust=lambda: self.trust,
            flush=self._flush,
            kick=self._smp.kick,
            computing=self._smp.computing,
            trust_changed=self._trust_changed,
            announce=self.xmpp.event,
        )
        #: Called with (peer, text, fingerprint of the session) for each text
        #: a peer sent inside OTR, as the event ``xfer_otr_message`` (peer,
        #: text) is raised; neither is rate-limited here (``xfer_transfer``
        #: sets it to its notices board, which is).
        self.on_text: Callable[[str, str, bytes | None], object] | None = None
        #: Called with (peer, session, payload) for each shared-folder
        #: payload (TLV 8 kinds 4 and 5, spec/share.md) a peer sent inside
        #: OTR; ``xfer_share`` sets it. Without it they are ignored.
        self.on_share: Callable[[str, Session, bytes], object] | None = None
        if self.config["private_key"] is not None:
            self.set_identity(
                self.config["private_key"],
                instance_tag=self.config["instance_tag"],
                trust_store=self.config["trust_store"],
            )
        self.xmpp.add_event_handler("message", self._on_message)
        self.xmpp.add_event_handler("message_error", self._on_bounce)
        self.xmpp.add_event_handler("presence_unavailable", self._on_peer_gone)
        self.xmpp.add_event_handler("session_start", self._on_new_session)
        # (Loaded after the log-in, the session under way is the first.)
        self._sessions_started = int(getattr(self.xmpp, "_session_started", False))
        self._expired = self.config["clock"]()

    def set_identity(
        self,
        private_key: PrivateKey,
        *,
        instance_tag: int | None = None,
        trust_store: TrustStore | None = None,
    ) -> None:
        """Use this long-term key (before any OTR traffic)."""
        self._account = Account(
            private_key,
            our_tag=instance_tag or 0x100 + secrets.randbelow(0xFFFFFF00),
            policy=Policy(require_encryption=True, answer_queries=True, defer_smp=True),
        )
        self._account.expire(self.config["clock"]())
        if trust_store is not None:
            self.trust = trust_store

    @property
    def account(self) -> Account:
        if self._account is None:
            raise LocalProtocolError("xfer_otr has no private key (set_identity)")
        return self._account

    def plugin_end(self) -> None:
        self.xmpp.del_event_handler("message", self._on_message)
        self.xmpp.del_event_handler("message_error", self._on_bounce)
        self.xmpp.del_event_handler("presence_unavailable", self._on_peer_gone)
        self._smp.close()

    # -- sending ---------------------------------------------------------------

    def _flush(self) -> None:
        for peer, body in self.account.data_to_send():
            self._outbox.send(peer, body)

    # -- receiving ---------------------------------------------------------------

    def _on_message(self, msg: StanzaBase) -> None:
        assert isinstance(msg, Message)
        if msg["type"] not in ("chat", "normal"):
            return
        body = msg["body"]
        if (
            not isinstance(body, str)
            or not (body.startswith("?OTR") or WHITESPACE_BASE in body)
            or self._account is None
        ):
            return  # plain text without a whitespace tag: not for us
        peer = msg["from"].full
        if is_delayed(msg.xml, self.xmpp.boundjid.bare):
            self._on_delayed(peer, body)
            return
        self._set_up.heard(peer)
        now = self.config["clock"]()
        if now - self._expired >= EXPIRE_EVERY:
            self._expired = now
            self.account.expire(now)
        try:
            session, events = self.account.receive(peer, body, now=now)
        except RemoteProtocolError as exc:
            log.info("unusable OTR message from %s: %s", peer, exc)
            self._flush()
            return
        if (
            body.startswith(DATA_PREFIX)
            and session.state is not MessageState.ENCRYPTED
            and not any(isinstance(e, ev.GoneInsecure) for e in events)
        ):
            # (A peer that ended the conversation, TLV 1, is not unreadable.)
            self._cannot_read(peer, session)
        self._flush()
        for event in events:
            self._event(peer, session, event)

    def _on_bounce(self, msg: StanzaBase) -> None:
        """slixmpp's ``message_error``: a bounce of one of our OTR messages
        (:meth:`~xfer.xmpp.outbox.Outbox.bounced`) is also raised as
        ``xfer_otr_bounced`` (the JID it went to, the condition)."""
        bounce = self._outbox.bounced(msg)
        if bounce is None:
            return
        self._set_up.bounced(*bounce)
        self.xmpp.event("xfer_otr_bounced", bounce)

    def _on_delayed(self, peer: str, body: str) -> None:
        """An OTR message that waited at a server: see
        :func:`~xfer.xmpp.delay.read_delayed`."""
        got = read_delayed(
            self.account, peer, body, self.config["clock"](), self._flush
        )
        if got is not None:
            session, events = got
            for event in events:
                self._event(peer, session, event)

    def _smp_applied(self, peer: str, session: Session, events: list[ev.Event]) -> None:
        """An SMP step computed off the loop was applied (or refused)."""
        self._flush()
        for event in events:
            self._event(peer, session, event)
        self._verifier.ended(peer, session)  # (if the session is over)

    def _holds(self, peer: str, session: Session) -> bool:
        return self._account is not None and any(
            s is session for s in self._account.sessions(peer)
        )

    def _cannot_read(self, peer: str, session: Session) -> None:
        """A data message we have no keys for: the peer holds a session we
        lost (we restarted). Note it (a transfer offer in it is gone: see
        :meth:`lost_offers`) and start a fresh AKE so the next one works."""
        self._unreadable[peer] = self.config["clock"]()
        if not self._set_up.ake_under_way(peer):
            # On the instance that got the message: the peer answers to it.
            session.start_ake()

    def lost_offers(self, peer: str) -> bool:
        """Whether ``peer`` recently sent data messages we could not read."""
        seen = self._unreadable.get(peer)
        return seen is not None and self.config["clock"]() - seen < OFFER_TTL

    def _on_new_session(self, _event: object) -> None:
        """A new server session (not a resumed one) after the first: the
        server told our peers we went offline, and they forgot our OTR
        sessions; so do we."""
        self._sessions_started += 1
        if self._sessions_started > 1 and self._account is not None:
            for peer in self._account.peers():
                self._forget(peer)

    def _on_peer_gone(self, presence: StanzaBase) -> None:
        """The peer's client went offline: its OTR state went with it."""
        peer = presence["from"].full
        if self._account is not None and "/" in peer:
            self._forget(peer)
            self._old.forget(peer)

    def _forget(self, peer: str) -> None:
        """Drop the sessions with ``peer``; a verification over one is over."""
        gone = self.account.sessions(peer)
        self.account.forget(peer)
        for session in gone:
            self._verifier.ended(peer, session)

    def _event(self, peer: str, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.GoneSecure):
            self._set_up.went_secure(peer, session)
            self.xmpp.event("xfer_otr_secure", (peer, event.fingerprint))
        elif isinstance(event, ev.SymmetricKeyReceived):
            if event.use == XFER_USE:
                self._xfer_payload(peer, session, event)
        elif isinstance(event, ev.SMPPending):
            self._smp.kick(peer, session)
        elif isinstance(event, ev.SMPAsked):
            self._verifier.asked(peer, event.question)
        elif isinstance(event, (ev.SMPSucceeded, ev.SMPFailed, ev.SMPAborted)):
            self._verifier.finished(peer, session, event)
        elif isinstance(event, ev.GoneInsecure):
            self._verifier.ended(peer, session)
        elif isinstance(event, ev.MessageReceived):
            self.xmpp.event("xfer_otr_message", (peer, event.text))
            if self.on_text is not None:
                self.on_text(peer, event.text, session.their_fingerprint)
        elif isinstance(event, ev.VersionUnsupported):
            self._unsupported(peer, event.peer_versions)

    def _xfer_payload(
        self, peer: str, session: Session, event: ev.SymmetricKeyReceived
    ) -> None:
        if not is_share_payload(event.data):
            self._offers.received(peer, session, event)
        elif self.on_share is not None:
            # Shared folders (spec/share.md): xfer_share's, if loaded.
            self.on_share(peer, session, event.data)

    def _unsupported(self, peer: str, versions: frozenset[int]) -> None:
        """``peer`` offered OTR in versions other than 3 only (plain text:
        anyone can send it in its name)."""
        if self.account.best(peer) is not None:
            # That client does speak version 3: the offer is forged or stale.
            log.info("%s offered OTR %s beside a private conversation", peer, versions)
            return
        self._set_up.incapable(peer)
        if not self._old.offered(peer, versions):
            return  # told already, or too many told of late
        log.info("%s offers only OTR %s: told it that xfer needs 3", peer, versions)
        self.xmpp.make_message(
            mto=peer, mbody=reply_text(versions), mtype="chat"
        ).send()
        self.xmpp.event("xfer_otr_unsupported", (peer, versions))

    def _trusted(self, peer: str, fingerprint: bytes) -> bool:
        fresh: Callable[[], bool] | None = self.config["trust_fresh"]
        if fresh is not None and not fresh():
            return False
        return self.trust.is_trusted(peer, fingerprint)

    def _trust_changed(self) -> None:
        hook: Callable[[TrustStore], None] | None = self.config["on_trust_change"]
        if hook is not None:
            hook(self.trust)

    # -- API -------------------------------------------------------------------

    def session(self, peer: str) -> Session | None:
        """The encrypted session with the full JID ``peer``, if there is one."""
        return self.account.best(peer)

    def fingerprint(self, peer: str) -> bytes | None:
        """The OTR fingerprint the full JID ``peer`` proved it holds."""
        session = self.account.best(peer)
        return None if session is None else session.their_fingerprint

    def is_trusted(self, peer: str) -> bool:
        fingerprint = self.fingerprint(peer)
        return fingerprint is not None and self.trust.is_trusted(peer, fingerprint)

    async def secure(
        self, peer: str, *, timeout: float = 30, answer_within: float | None = None
    ) -> tuple[str, Session]:
        """See :meth:`xfer.xmpp.securing.Securing.secure`."""
        return await self._set_up.secure(
            peer, timeout=timeout, answer_within=answer_within
        )

    def secured(self, peer: str) -> tuple[str, Session] | None:
        """See :meth:`xfer.xmpp.securing.Securing.secured`."""
        return self._set_up.secured(peer)

    async def renewed(
        self, peer: str, old_ssid: bytes | None, *, timeout: float = 30
    ) -> Session:
        """See :meth:`xfer.xmpp.securing.Securing.renewed`."""
        return await self._set_up.renewed(peer, old_ssid, timeout=timeout)

    def send_offer(
        self, session: Session, offer: TransferOffer, *, fingerprint: bytes
    ) -> bytes:
        """Send ``offer`` in TLV 8 over exactly ``session``, checked again to
        be with ``fingerprint``; return its key (see
        :meth:`~xfer.xmpp.offers.OfferTable.send_offer`).

        Raises:
            NotSecure: ``session`` is not encrypted, or no longer with
            ``fingerprint``.
        """
        return self._offers.send_offer(session, offer, fingerprint=fingerprint)

    def expect_verdict(
        self, peer: str, transfer_id: bytes, fingerprint: bytes
    ) -> asyncio.Future[TransferVerdict]:
        """The receiver's verdict on ``transfer_id``, once it comes from
        ``peer``'s account over a session with ``fingerprint`` (call before
        the offer goes out; :meth:`forget_verdict` after)."""
        return self._offers.expect_verdict(peer, transfer_id, fingerprint)

    def forget_verdict(self, transfer_id: bytes) -> None:
        self._offers.forget_verdict(transfer_id)

    def send_digest(
        self, session: Session, digest: TransferDigest, *, peer: str, fingerprint: bytes
    ) -> None:
        """Send our ``digest`` of a transfer inside OTR to the fingerprint its
        offer went to (see :meth:`~xfer.xmpp.offers.OfferTable.send_digest`).

        Raises:
            NotSecure: no encrypted session with ``peer`` and ``fingerprint``
            is left.
        """
        self._offers.send_digest(session, digest, peer=peer, fingerprint=fingerprint)

    def expect_digest(
        self, peer: str, transfer_id: bytes, fingerprint: bytes
    ) -> asyncio.Future[TransferDigest]:
        """The sender's digest of ``transfer_id``, once it comes from
        ``peer``'s account over a session with ``fingerprint`` (call before
        accepting; :meth:`forget_digest` after)."""
        return self._offers.expect_digest(peer, transfer_id, fingerprint)

    def forget_digest(self, transfer_id: bytes) -> None:
        self._offers.forget_digest(transfer_id)

    def send_private(
        self, peer: str, fingerprint: bytes, payload: bytes, session: Session | None
    ) -> None:
        """Send xfer's TLV 8 ``payload`` (spec/share.md) inside OTR to the
        full JID ``peer`` over ``session`` or, if that one is no longer
        encrypted with ``fingerprint``, another session that is.

        Raises:
            NotSecure: no such session is left.
        """
        self._offers.send_payload(peer, fingerprint, session, payload)

    def send_verdict(self, got: ReceivedOffer, verdict: TransferVerdict) -> None:
        """Tell the sender of ``got`` what became of it, inside OTR (see
        :meth:`~xfer.xmpp.offers.OfferTable.send_verdict`).

        Raises:
            NotSecure: no encrypted session with that peer and fingerprint
            is left.
        """
        self._offers.send_verdict(got, verdict)

    def refused_offer(self, transfer_id: bytes) -> bool:
        """Whether the offer ``transfer_id`` came in OTR and was refused for
        an untrusted fingerprint."""
        return self._offers.refused_offer(transfer_id)

    async def claim_offer(
        self, peer: str, transfer_id: bytes, *, timeout: float = 10
    ) -> ReceivedOffer | None:
        """Take the OTR offer for ``transfer_id`` if ``peer`` sent it,
        waiting up to ``timeout`` seconds for it; an offer is claimed once
        (see :meth:`~xfer.xmpp.offers.OfferTable.claim_offer`)."""
        return await self._offers.claim_offer(peer, transfer_id, timeout=timeout)

    async def verify(
        self,
        peer: str,
        secret: bytes,
        *,
        question: str | None = None,
        timeout: float = 120,
    ) -> SMPResult:
        """Run SMP with the full JID ``peer`` and wait up to ``timeout``
        seconds for its outcome: ``SMPResult.SUCCEEDED`` (the fingerprint is
        then trusted, by SMP, and saved), ``FAILED`` (it is then not trusted,
        however it was before) or ``ABORTED`` (trust unchanged). The result
        is true only for a success.

        Raises:
            NotSecure: no encrypted session. VerificationTimeout: no outcome
            in time (the exchange is given up: an SMP abort to the peer).
        """
        return await self._verifier.verify(
            peer, secret, question=question, timeout=timeout
        )

    async def next_question(
        self, timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        """The next verification a peer started: (its full JID, question).

        With ``peer`` (a bare or full JID), only a question from that peer is
        taken; questions from others stay queued for their own callers. A
        question whose exchange is over (aborted, the conversation ended) is
        never given.

        Raises:
            VerificationTimeout: none within ``timeout`` seconds.
        """
        return await self._verifier.next_question(timeout, peer=peer)

    async def next_unsupported(
        self, timeout: float | None = None
    ) -> tuple[str, frozenset[int]]:
        """The next peer that offered only OTR versions other than 3 and was
        told that xfer needs 3: (its full JID, the versions it offered). Not
        authenticated (see :mod:`xfer.xmpp.versions`).

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        return await self._old.next(timeout)

    async def answer(
        self, peer: str, secret: bytes, *, timeout: float = 120
    ) -> SMPResult:
        """Answer the verification ``peer`` started (taken with
        :meth:`next_question`) with ``secret`` and wait up to ``timeout``
        seconds for the outcome, as :meth:`verify` does; ``ABORTED`` at once
        if the peer gave it up meanwhile.

        Raises:
            NotSecure: no encrypted session. VerificationTimeout: no outcome
            in time (the exchange is given up: an SMP abort to the peer).
        """
        return await self._verifier.answer(peer, secret, timeout=timeout)

    def answer_smp(self, peer: str, secret: bytes) -> None:
        """Answer the peer's verification question (event
        ``xfer_otr_smp_asked``); the outcome comes as ``xfer_otr_smp_done``
        with ``(peer, SMPResult)``."""
        self._verifier.answer_smp(peer, secret)

    def end(self, peer: str) -> None:
        """End the private conversation with the full JID ``peer`` (giving
        up a verification under way first: an SMP abort, then TLV 1)."""
        for s in self.account.sessions(peer):
            if s.smp.state is not SMPState.EXPECT1 or s.smp_busy:
                for event in s.smp_abort():
                    self._event(peer, s, event)
            s.end()
            self._verifier.ended(peer, s)
        self._flush()


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_otr = XferOTR
