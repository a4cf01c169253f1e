"""Transfer offers, digests and verdicts in OTR TLV 8: the table the
``xfer_otr`` plugin keeps of them.

A transfer offer goes to the peer in TLV 8 (extra symmetric key, use
``XFER_USE``) over exactly the session whose fingerprint the sender checked,
and the key of that very message keys the transfer (``spec/otr.md`` section
5). On the receiving side, offers wait in a bounded table until the Jingle
session that names their transfer id claims them; offers from fingerprints
that are not trusted have a small quota of their own, so that they cannot
crowd out trusted ones. After the sealed stream, the sender's digest (the
file's SHA-256) follows in TLV 8 to the same fingerprint; the receiver's
verdict on a transfer comes back in TLV 8 too. Each counts only from the
account and the fingerprint of its offer, and only for a transfer id that
is waited for.

:class:`OfferTable` holds that bookkeeping; the plugin
(:class:`~xfer.xmpp.otr.XferOTR`) owns one, hands it the TLV 8 payloads it
receives, and its public ``send_offer``, ``claim_offer``, ``send_digest``,
``expect_digest``, ``forget_digest``, ``expect_verdict``, ``send_verdict``,
``forget_verdict`` and ``refused_offer`` delegate to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from xfer.errors import NotSecure, RemoteProtocolError
from xfer.jid import bare_jid
from xfer.otr.session import MessageState
from xfer.transfer.offer import (
    XFER_USE,
    TransferDigest,
    TransferOffer,
    TransferVerdict,
    decode_payload,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr import events as ev
    from xfer.otr.session import Session

__all__ = [
    "MAX_OFFERS_PER_PEER",
    "MAX_PENDING_OFFERS",
    "MAX_REFUSED",
    "MAX_UNTRUSTED_OFFERS",
    "OFFER_TTL",
    "OfferTable",
    "ReceivedOffer",
]

log = logging.getLogger(__name__)

#: Offers received but not yet claimed by a Jingle session, per account.
MAX_PENDING_OFFERS = 64
#: Unclaimed offers from one account, at most.
MAX_OFFERS_PER_PEER = 8
#: Unclaimed offers from fingerprints that are not trusted, in all (by
#: default; config ``untrusted_offers``, 0 refuses them).
MAX_UNTRUSTED_OFFERS = 4
#: Offers refused for an untrusted fingerprint, remembered to say so.
MAX_REFUSED = 64
#: How long an unclaimed offer is kept.
OFFER_TTL = 120.0

_Payload = TypeVar("_Payload", TransferVerdict, TransferDigest)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedOffer:
    """A transfer offer that arrived in TLV 8, with the key it came with."""

    peer: str
    fingerprint: bytes
    offer: TransferOffer
    key: bytes = field(repr=False)
    received: float
    trusted: bool = False
    #: The session it came over (the verdict goes back over it).
    session: Session | None = field(default=None, repr=False, compare=False)


class _Awaited(Generic[_Payload]):
    """Payloads of one kind that we wait for, by transfer id: each counts
    only from the account (any resource) and the fingerprint given."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._waiting: dict[bytes, tuple[str, bytes, asyncio.Future[_Payload]]] = {}

    def expect(
        self, peer: str, transfer_id: bytes, fingerprint: bytes
    ) -> asyncio.Future[_Payload]:
        waiter: asyncio.Future[_Payload] = asyncio.get_running_loop().create_future()
        self.forget(transfer_id)
        self._waiting[transfer_id] = (peer, fingerprint, waiter)
        return waiter

    def forget(self, transfer_id: bytes) -> None:
        entry = self._waiting.pop(transfer_id, None)
        if entry is not None and not entry[2].done():
            entry[2].cancel()

    def received(
        self, peer: str, fingerprint: bytes, transfer_id: bytes, payload: _Payload
    ) -> None:
        expected = self._waiting.get(transfer_id)
        if expected is None:
            log.info("ignoring a %s from %s on no transfer of ours", self._what, peer)
            return
        want_peer, want_fingerprint, waiter = expected
        if bare_jid(peer) != bare_jid(want_peer) or fingerprint != want_fingerprint:
            log.warning(
                "ignoring a %s from %s: not the peer of the offer", self._what, peer
            )
            return
        if not waiter.done():
            waiter.set_result(payload)


class OfferTable:
    """The transfer offers and verdicts that ride in TLV 8, for one account.

    Args:
        flush: sends what the sessions queued (after a TLV 8 went out).
        sessions: the sessions with a full JID, any state.
        trusted: whether ``(peer, fingerprint)`` is trusted.
        lost: whether ``peer`` recently sent data messages we could not
            read (an offer in them is gone: a claim does not wait for it).
        clock: monotonic seconds.
        untrusted_quota: unclaimed offers from untrusted fingerprints kept
            at most, in all (read at each offer: it may change).
    """

    def __init__(
        self,
        *,
        flush: Callable[[], None],
        sessions: Callable[[str], list[Session]],
        trusted: Callable[[str, bytes], bool],
        lost: Callable[[str], bool],
        clock: Callable[[], float],
        untrusted_quota: Callable[[], int],
    ) -> None:
        self._flush = flush
        self._sessions = sessions
        self._trusted = trusted
        self._lost = lost
        self._clock = clock
        self._untrusted_quota = untrusted_quota
        #: Offers received and not claimed yet, by transfer id (read it; the
        #: table alone changes it).
        self.unclaimed: dict[bytes, ReceivedOffer] = {}
        self._offer_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        #: Transfer ids of offers refused for an untrusted fingerprint.
        self._refused: dict[bytes, None] = {}
        #: Verdicts we wait for (as the sender), digests (as the receiver).
        self._verdicts: _Awaited[TransferVerdict] = _Awaited("verdict")
        self._digests: _Awaited[TransferDigest] = _Awaited("digest")

    # -- sending ---------------------------------------------------------------

    def send_offer(
        self, session: Session, offer: TransferOffer, *, fingerprint: bytes
    ) -> bytes:
        """Send ``offer`` in TLV 8 over ``session``; return its key.

        ``session`` must be exactly the one whose ``fingerprint`` the caller
        checked: it is checked again here, with nothing in between, so that
        the key can go to no other session (another instance of the same
        JID, made by whoever answered an AKE in the peer's name).

        Raises:
            NotSecure: ``session`` is not encrypted, or no longer with
            ``fingerprint``.
        """
        if (
            session.state is not MessageState.ENCRYPTED
            or session.their_fingerprint != fingerprint
        ):
            raise NotSecure("the private conversation changed before the offer")
        key = session.extra_symmetric_key(XFER_USE, offer.encode())
        self._flush()
        return key

    def expect_verdict(
        self, peer: str, transfer_id: bytes, fingerprint: bytes
    ) -> asyncio.Future[TransferVerdict]:
        """The receiver's verdict on ``transfer_id``, once it comes from
        ``peer``'s account over a session with ``fingerprint`` (call before
        the offer goes out; :meth:`forget_verdict` after)."""
        return self._verdicts.expect(peer, transfer_id, fingerprint)

    def forget_verdict(self, transfer_id: bytes) -> None:
        self._verdicts.forget(transfer_id)

    def send_digest(
        self, session: Session, digest: TransferDigest, *, peer: str, fingerprint: bytes
    ) -> None:
        """Send the sender's ``digest`` of a transfer inside OTR to the very
        fingerprint its offer went to: over ``session`` (the offer's), or,
        if that one is no longer encrypted with ``fingerprint``, another
        session with the full JID ``peer`` that is.

        Raises:
            NotSecure: no such session is left.
        """
        self._send_to(peer, fingerprint, session, digest.encode())

    def send_verdict(self, got: ReceivedOffer, verdict: TransferVerdict) -> None:
        """Tell the sender of ``got`` what became of it, inside OTR: over the
        session the offer came over, or another encrypted one with the same
        peer and fingerprint (after a re-key).

        Raises:
            NotSecure: no such session is left.
        """
        self._send_to(got.peer, got.fingerprint, got.session, verdict.encode())

    def send_payload(
        self, peer: str, fingerprint: bytes, first: Session | None, payload: bytes
    ) -> None:
        """Send xfer's TLV 8 ``payload`` as a verdict goes (see
        :meth:`send_verdict`): over ``first`` or another encrypted session
        with ``peer`` and ``fingerprint``.

        Raises:
            NotSecure: no such session is left.
        """
        self._send_to(peer, fingerprint, first, payload)

    def _send_to(
        self, peer: str, fingerprint: bytes, first: Session | None, payload: bytes
    ) -> None:
        candidates = [first] if first is not None else []
        candidates += self._sessions(peer)
        for session in candidates:
            if (
                session is not None
                and session.state is MessageState.ENCRYPTED
                and session.their_fingerprint == fingerprint
            ):
                session.extra_symmetric_key(XFER_USE, payload)
                self._flush()
                return
        raise NotSecure(f"no private conversation with {peer} to report to")

    # -- receiving -------------------------------------------------------------

    def expect_digest(
        self, peer: str, transfer_id: bytes, fingerprint: bytes
    ) -> asyncio.Future[TransferDigest]:
        """The sender's digest of ``transfer_id``, once it comes from
        ``peer``'s account over a session with ``fingerprint`` (call before
        accepting the offer; :meth:`forget_digest` after)."""
        return self._digests.expect(peer, transfer_id, fingerprint)

    def forget_digest(self, transfer_id: bytes) -> None:
        self._digests.forget(transfer_id)

    def refused_offer(self, transfer_id: bytes) -> bool:
        """Whether the offer ``transfer_id`` came in OTR and was refused for
        an untrusted fingerprint."""
        return transfer_id in self._refused

    async def claim_offer(
        self, peer: str, transfer_id: bytes, *, timeout: float = 10
    ) -> ReceivedOffer | None:
        """Take the OTR offer for ``transfer_id`` if ``peer`` sent it.

        Waits up to ``timeout`` seconds for it (XMPP keeps one sender's
        stanzas in order, so it normally came first). An offer is claimed
        once; one from another JID is not given out.
        """
        if (
            transfer_id not in self.unclaimed
            and transfer_id not in self._refused
            and not self._lost(peer)
        ):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting = self._offer_waiters.setdefault(transfer_id, [])
            waiting.append(waiter)  # each claim its own: none misses the offer
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout)
            finally:
                waiting.remove(waiter)
                if not waiting:
                    del self._offer_waiters[transfer_id]
        got = self.unclaimed.get(transfer_id)
        if got is None or got.peer != peer:
            return None
        del self.unclaimed[transfer_id]
        return got

    def received(
        self, peer: str, session: Session, event: ev.SymmetricKeyReceived
    ) -> None:
        """A TLV 8 with our use came over ``session``: an offer, a digest or
        a verdict."""
        try:
            payload = decode_payload(event.data)
        except RemoteProtocolError as exc:
            log.info(
                "malformed transfer offer, digest or verdict from %s: %s", peer, exc
            )
            return
        fingerprint = session.their_fingerprint
        if fingerprint is None:  # pragma: no cover (ENCRYPTED)
            return
        if isinstance(payload, TransferVerdict):
            # A receiver's verdict counts only from the account and the very
            # fingerprint the offer went to; so does a sender's digest.
            self._verdicts.received(peer, fingerprint, payload.transfer_id, payload)
        elif isinstance(payload, TransferDigest):
            self._digests.received(peer, fingerprint, payload.transfer_id, payload)
        else:
            self._offer_received(peer, session, payload, event.key)

    def _offer_received(
        self, peer: str, session: Session, offer: TransferOffer, key: bytes
    ) -> None:
        fingerprint = session.their_fingerprint
        assert fingerprint is not None
        self._expire_offers()
        if offer.transfer_id in self.unclaimed or offer.transfer_id in self._refused:
            return  # a transfer id is used once
        trusted = self._trusted(peer, fingerprint)
        account = bare_jid(peer)
        from_peer = sum(
            1 for o in self.unclaimed.values() if bare_jid(o.peer) == account
        )
        untrusted = sum(1 for o in self.unclaimed.values() if not o.trusted)
        if not trusted and untrusted >= self._untrusted_quota():
            # Throw-away accounts cost nothing to make: their offers have a
            # small quota of their own, so that they never crowd out the
            # trusted ones (the Jingle offer is then refused as untrusted).
            log.info("refusing an offer from %s: fingerprint not trusted", peer)
            self._refused[offer.transfer_id] = None
            while len(self._refused) > MAX_REFUSED:
                del self._refused[next(iter(self._refused))]
            self._wake_claims(offer.transfer_id)
            return
        if (
            len(self.unclaimed) >= MAX_PENDING_OFFERS
            or from_peer >= MAX_OFFERS_PER_PEER
        ):
            # (One account cannot fill the table and starve the others.)
            log.info("dropping an offer from %s: too many pending", peer)
            return
        self.unclaimed[offer.transfer_id] = ReceivedOffer(
            peer=peer,
            fingerprint=fingerprint,
            offer=offer,
            key=key,
            received=self._clock(),
            trusted=trusted,
            session=session,
        )
        self._wake_claims(offer.transfer_id)

    def _wake_claims(self, transfer_id: bytes) -> None:
        for waiter in self._offer_waiters.get(transfer_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def _expire_offers(self) -> None:
        now = self._clock()
        for tid, got in list(self.unclaimed.items()):
            if now - got.received > OFFER_TTL:
                del self.unclaimed[tid]
