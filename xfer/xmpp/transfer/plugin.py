"""Encrypted file transfer: the ``xfer_transfer`` slixmpp plugin.

It composes the other plugins into the flow of one transfer:

1. OTR goes secure with the peer (``xfer_otr``) and its fingerprint is
   checked against the trust store;
2. the sender sends the private half of the offer in TLV 8 and takes the
   extra symmetric key of that message as the envelope's key material;
3. a Jingle session (``xfer_xep_0166``) offers the *sealed* stream:
   its size, an opaque name and ``<encrypted transfer-id/>``
   (``spec/jingle.md``);
4. the transport: XEP-0260 SOCKS5 (both sides' direct candidates, then the
   server's proxy), or XEP-0261 IBB through transport-replace when no
   candidate works;
5. the sealed stream flows, the sender hashing the file as it seals it;
   after the last byte its SHA-256 follows inside OTR (the digest). The
   receiver verifies every chunk, the final one, the size, and the
   SHA-256 against that digest, renames the file into place, says so
   inside OTR (the verdict) and ends the session with ``success`` (or the
   reason it failed, the file removed).

Whatever else peers send is handed to the application as rate-limited
notices (:meth:`XferTransfer.next_notice`, the event ``xfer_notice``): text
inside OTR, and files offered without xfer's encryption, by plain Jingle or
by legacy stream initiation (``xfer_xep_0096``), which are refused.

Load it into any slixmpp client::

    import xfer.xmpp.transfer
    client.register_plugin("xfer_transfer", {"identity": identity_dir},
                           module=xfer.xmpp.transfer)
    await client.plugin["xfer_transfer"].send_file("bob@example.org", "report.pdf")
    offer = await client.plugin["xfer_transfer"].next_offer()
    await offer.accept("downloads/")
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, ClassVar

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.base import BasePlugin, register_plugin
from slixmpp.plugins.xep_0030 import XEP_0030
from slixmpp.plugins.xep_0199 import XEP_0199

import xfer.xmpp.ibb as _ibb
import xfer.xmpp.jingle as _jingle
import xfer.xmpp.legacy as _legacy
import xfer.xmpp.muc as _muc
import xfer.xmpp.otr as _otr
import xfer.xmpp.socks5 as _socks5
from xfer.aio.bytestream import no_progress
from xfer.aio.stream import FLUSH_INTERVAL
from xfer.envelope import DEFAULT_CHUNK_SIZE
from xfer.errors import (
    LocalProtocolError,
    TransferTimeout,
    XferError,
)
from xfer.jingle.wire import (
    NS_ENCRYPTED,
    NS_FILE_TRANSFER,
    NS_IBB,
    NS_JINGLE,
    NS_S5B,
)
from xfer.notices import PeerMessage, cut_text
from xfer.store import IdentityStore
from xfer.xmpp._slixmpp import drop_session, plugin
from xfer.xmpp.reach import Reach
from xfer.xmpp.transfer.context import (
    RESTARTED,
    Context,
    Liveness,
    Settings,
    Siblings,
)
from xfer.xmpp.transfer.many import ManyResult, send_to_many
from xfer.xmpp.transfer.negotiation import (
    Negotiator,
)
from xfer.xmpp.transfer.notices import NoticeBoard
from xfer.xmpp.transfer.receiving import IncomingOffer, Receiver
from xfer.xmpp.transfer.rejoin import Finder, Reannouncer
from xfer.xmpp.transfer.sending import Sender, SendResult
from xfer.xmpp.transfer.streaming import ReceivedStream, StreamSender

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from xfer.aio.bytestream import ProgressCallback
    from xfer.notices import Notice
    from xfer.otr.session import Session
    from xfer.otr.trust import TrustStore
    from xfer.xmpp.jingle import XferJingle
    from xfer.xmpp.otr import XferOTR
    from xfer.xmpp.socks5 import XferSocks5
    from xfer.xmpp.transfer.streaming import Source

__all__ = [
    "RESTARTED",
    "IncomingOffer",
    "ManyResult",
    "ReceivedStream",
    "SendResult",
    "XferTransfer",
]

log = logging.getLogger(__name__)

#: What we announce in service discovery (XEP-0030), as XEP-0166 asks.
FEATURES = (NS_JINGLE, NS_FILE_TRANSFER, NS_S5B, NS_IBB, NS_ENCRYPTED)
#: XEP-0261 types block-size as xs:short: at most 32767 in a Jingle transport.
IBB_BLOCK_SIZE = 32767
for _plugin in (
    _ibb.XferIBB,
    _socks5.XferSocks5,
    _jingle.XferJingle,
    _otr.XferOTR,
    _legacy.XferSI,
):
    register_plugin(_plugin)


class XferTransfer(BasePlugin):
    """``client.register_plugin("xfer_transfer", config, module=xfer.xmpp.transfer)``.

    Config:
        identity: an :class:`~xfer.store.IdentityStore` or its directory (the
            OTR key and trust store; created if missing).
        accept_untrusted: also offer files from (and send files to) peers
            whose fingerprint is not trusted; default False.
        max_size: largest plaintext accepted, in bytes (None: no limit).
        socks5_direct / socks5_proxy: offer our own SOCKS5 streamhost / the
            server's proxy as candidates (we always try the peer's).
        ibb: allow falling back to In-Band Bytestreams.
        local_addresses: offer this host's own interface addresses as
            direct SOCKS5 candidates (``xfer.jingle.candidates.offer_order``:
            loopback only with ``loopback``).
        loopback: offer loopback candidates and connect to the peer's: True,
            False, or None (the default) when our server is on this host
            (the XMPP connection is over loopback), so the peer may be too.
        addresses: [(host, port or None)] to offer besides, as ``assisted``
            candidates (a port-forwarded public address; None: the port our
            streamhost listens on).
        advertise: [(host, port)] to announce as our direct SOCKS5 candidates
            instead of all of the above (tests).
        candidate_timeout: how long connecting to one of the peer's
            candidates (TCP and the SOCKS5 handshake) may take (s); they are
            tried staggered, a quarter second apart (``xfer.aio.eyeballs``).
        candidate_grace: once the peer reported the candidate of ours it
            reached, how much longer our tries of its candidates that could
            still win go on (s); those that could not stop at once.
        chunk_size, suite, workers: envelope parameters for sending; suite
            ``"auto"`` (the default) seals with the suite whose MAC is faster
            on this machine, measured once (``xfer.envelope.choice``).
        offer_timeout: how long a sent offer waits for an answer (s).
        connect_timeout: for the OTR set-up and each transport step (s).
        probe_timeout: before the OTR set-up, how long the sender waits for
            a sign of the peer (its features, presence, a first OTR answer or
            a bounce), so that an offline peer or one without xfer is told
            apart at once (s); ``probe_timeout_remote`` for a peer on
            another domain (the servers may have to connect first).
        stall_timeout: a data stream that moves nothing this long fails (s).
        resume_attempts: how often a sender offers the rest of a transfer
            that broke off (0: never), waiting ``resume_backoff`` seconds
            (1), then twice as long each time (at most ``resume_backoff_max``).
        resume_wait: how long a receiver whose transfer broke off waits for
            the sender to offer the rest (s).
        keep_partial: when a receipt breaks off for good, keep its verified
            prefix beside the destination so that a later offer of the same
            file goes on from there (``xfer.aio.partial``).
        partial_max_age: partial files older than this are removed when
            accepting into their directory (s).
        max_per_peer: offers and transfers one account may have going with
            us at once; more are answered ``busy``.
        max_pending_offers: offers waiting for an answer, at most.
        max_untrusted_offers: of those, from untrusted fingerprints (with
            ``accept_untrusted``), at most.
    """

    name = "xfer_transfer"
    description = "End-to-end encrypted file transfer (xfer)"
    dependencies: ClassVar[set[str]] = {
        "xep_0030",
        "xep_0199",
        "xfer_xep_0166",
        "xfer_otr",
        "xfer_ibb",
        "xfer_socks5",
        "xfer_xep_0096",
    }
    default_config: ClassVar[dict[str, object]] = {
        "identity": None,
        "accept_untrusted": False,
        "max_size": None,
        "socks5_direct": True,
        "socks5_proxy": True,
        "ibb": True,
        "ibb_block_size": IBB_BLOCK_SIZE,
        "advertise": None,
        "local_addresses": True,
        "loopback": None,
        "addresses": None,
        "candidate_timeout": 2.0,
        "candidate_grace": 0.4,
        "chunk_size": DEFAULT_CHUNK_SIZE,
        "suite": "auto",
        "workers": 2,
        "offer_timeout": 300.0,
        "connect_timeout": 30.0,
        "probe_timeout": 2.0,
        "probe_timeout_remote": 10.0,
        "max_pending_offers": 16,
        "max_untrusted_offers": 2,
        "otr_offer_wait": 10.0,
        "stall_timeout": 60.0,
        "resume_attempts": 5,
        "resume_backoff": 1.0,
        "resume_backoff_max": 15.0,
        "resume_wait": 120.0,
        "keep_partial": True,
        "partial_max_age": 7 * 24 * 3600.0,
        "max_per_peer": 4,
        "resume_check": 5.0,
    }

    def plugin_init(self) -> None:
        settings, siblings = Settings(self.config), Siblings(self.xmpp)
        self._settings, self._siblings = settings, siblings
        self._liveness = Liveness()
        #: What peers sent that xfer does not take (text inside OTR, refused
        #: unencrypted offers), rate-limited, for :meth:`next_notice`.
        self.notices = NoticeBoard(siblings.event)
        context = Context(
            settings=settings,
            siblings=siblings,
            trust_ok=self._trust_ok,
            liveness=self._liveness,
            notice=self.notices.post,
        )
        negotiator = Negotiator(settings, siblings)
        self._receiver = Receiver(context, negotiator)
        reach = Reach(
            self.xmpp, timeout=lambda peer: settings.probe_wait(peer, siblings.jid)
        )
        self._sender = Sender(
            context, negotiator, reach, Finder(self.xmpp, reach, context)
        )
        # Senders whose transfers to us wait for the rest look for us.
        Reannouncer(self.xmpp, lambda: (key[0] for key in self._receipts))
        self._streamer = StreamSender(context, negotiator, self._sender)
        #: The vetted offers waiting for :meth:`next_offer`, the receipts
        #: in progress (tests look at both).
        self._offers = self._receiver.offers
        self._receipts = self._receiver.receipts
        self._queued = self._receiver.queued
        #: Set while we are connected (a resumed XEP-0198 stream included).
        self.online = self._liveness.online
        self.xmpp.add_event_handler("session_start", self._on_online)
        self.xmpp.add_event_handler("session_resumed", self._on_resumed)
        self.xmpp.add_event_handler("disconnected", self._on_offline)
        if getattr(self.xmpp, "_session_started", False):
            self.online.set()
        identity = self._settings.identity
        if identity is not None:
            store = (
                identity
                if isinstance(identity, IdentityStore)
                else IdentityStore(identity)
            )
            self.identity: IdentityStore | None = store
            # No instance tag from the store: every running client of the
            # account (process, resource) needs its own (spec/otr.md 2), so
            # the OTR plugin draws a fresh one.
            self.otr.set_identity(store.private_key(), trust_store=store.trust_store())
            self._trust_seen = _file_state(store.trust_path)
            self.otr.config["on_trust_change"] = self.save_trust
            self.otr.config["trust_fresh"] = self.trust_as_saved
        else:
            self.identity = None
            self._trust_seen = None
        if self._settings.accept_untrusted is False:
            # Offers from untrusted fingerprints would only be refused: do
            # not keep them at all.
            self.otr.config["untrusted_offers"] = 0
        self.jingle.on_initiate = self._receiver.on_initiate
        self.otr.on_text = self._on_otr_text
        siblings.si.on_offer = self.notices.post
        self._announce_features()

    def _announce_features(self) -> None:
        """Our features, for the full JID bound now: slixmpp keeps them per
        full JID, and a new log-in may bind another resource."""
        disco = plugin(self.xmpp, "xep_0030", XEP_0030)
        for feature in FEATURES:
            disco.add_feature(feature)

    def _on_otr_text(self, peer: str, text: str, fingerprint: bytes | None) -> None:
        kept, cut = cut_text(text)
        try:
            trusted = (
                fingerprint is not None
                and self.trust_as_saved()
                and self.trust.is_trusted(peer, fingerprint)
            )
        except LocalProtocolError:  # a server's address that names no account
            trusted = False
        self.notices.post(
            PeerMessage(
                peer=peer, text=kept, fingerprint=fingerprint, trusted=trusted, cut=cut
            )
        )

    def _on_online(self, _event: object) -> None:
        self._announce_features()
        self.online.set()

    def _on_offline(self, _event: object) -> None:
        self.online.clear()
        self._liveness.drops += 1

    async def _on_resumed(self, _event: object) -> None:
        """A resumed XEP-0198 session counts as online once the server
        answers on it.

        Prosody 0.12 can resume a session whose connection broke in the
        middle of a stanza and then process nothing more from it. Such a
        stream is dropped, with its resumption token, so that the client's
        reconnection binds a fresh session instead.
        """
        try:
            await plugin(self.xmpp, "xep_0199", XEP_0199).ping(
                JID(self.xmpp.boundjid.domain), timeout=self._settings.resume_check
            )
        except IqError:
            pass  # an answer, even an error, is a live stream
        except IqTimeout:
            log.warning("the resumed XMPP session is dead; starting a new one")
            drop_session(self.xmpp)
            return
        self.online.set()

    # -- the other plugins -------------------------------------------------------

    @property
    def otr(self) -> XferOTR:
        return self._siblings.otr

    @property
    def jingle(self) -> XferJingle:
        return self._siblings.jingle

    @property
    def socks5(self) -> XferSocks5:
        return self._siblings.socks5

    @property
    def ibb(self) -> _ibb.XferIBB:
        return self._siblings.ibb

    @property
    def trust(self) -> TrustStore:
        return self._siblings.trust

    def _trust_ok(self, peer: str, fingerprint: bytes) -> bool:
        policy = self._settings.accept_untrusted
        if callable(policy):
            return bool(policy(peer, fingerprint))
        if policy:
            return True
        return self.trust_as_saved() and self.trust.is_trusted(peer, fingerprint)

    def trust_as_saved(self) -> bool:
        """Read the trust store again if its file changed on disk since this
        client last read or wrote it: 'xfer untrust' or 'xfer trust' in
        another process counts at this client's next decision (an offer
        taken or made, a share request), not at its next start. False if it
        changed and cannot be read (damaged): then no key counts as trusted.
        True without an identity directory (the trust is the caller's)."""
        identity = self.identity
        if identity is None:
            return True
        seen = _file_state(identity.trust_path)
        if seen == self._trust_seen:
            return True
        try:
            self.otr.trust = identity.trust_store()
        except (OSError, XferError) as exc:
            log.warning("could not read the trust store again: %s", exc)
            return False
        self._trust_seen = seen
        return True

    def save_trust(self, store: TrustStore | None = None) -> None:
        """Save the trust store (default: the one in use, after a change
        made through ``otr.trust``) to the identity directory, and remember
        the file as written, so this client's own save is not taken for
        another process's change (which would be read back over the store
        in use)."""
        identity = self.identity
        if identity is None:
            raise LocalProtocolError("no identity directory to save the trust in")
        identity.save_trust_store(self.trust if store is None else store)
        self._trust_seen = _file_state(identity.trust_path)

    # -- sending -------------------------------------------------------------------

    async def secure(self, peer: str) -> tuple[str, Session]:
        """An OTR session with ``peer`` (a full or bare JID) to send over:
        (its full JID, the session). Unless one is up, where ``peer`` can
        receive is asked first (:mod:`xfer.xmpp.reach`).

        Raises:
            PeerOffline: it is not online. PeerIncapable: online, but its
            client cannot receive with xfer. NotSecure: no answer, or no
            OTR session in time.
        """
        return await self._sender.secure(peer)

    async def send_file(
        self,
        peer: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        media_type: str = "application/octet-stream",
        progress: ProgressCallback = no_progress,
        check_source: Callable[[], None] | None = None,
    ) -> SendResult:
        """Send the file at ``path`` to ``peer`` (a full or bare JID).

        Returns once the receiver verified and stored it. ``check_source``,
        if given, is called once the last byte is read and sealed, before
        the digest goes out: it raises (an OSError) if the file changed
        meanwhile, and the transfer fails with the receiver keeping nothing.

        Raises:
            NotSecure: no OTR session could be set up. UntrustedPeer: the
            peer's fingerprint is not trusted. TransferDeclined,
            TransferRejected: the receiver said no or failed (``reason``).
            TransportError (NoUsableTransport, TransferTimeout...).
            OSError: the file could not be read.
        """
        return await self._sender.send(
            peer, path, name, media_type, progress, check_source
        )

    async def send_file_to_many(
        self,
        peers: Iterable[str],
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        media_type: str = "application/octet-stream",
        progress: Callable[[str], ProgressCallback] | None = None,
    ) -> ManyResult:
        """Send the file at ``path`` to each of ``peers`` (full or bare
        JIDs; each once, never to ourselves), concurrently, each under its
        own OTR offer and fresh keys; the file is read from disk once for
        all (``spec/otr.md`` 5.5). ``progress(peer)`` gives each one's
        progress callback.

        Returns who got it: :attr:`ManyResult.results` maps each peer to its
        :class:`SendResult` or to the error that stopped its transfer (as
        :meth:`send_file` would raise it). One recipient's failure does not
        stop the others, and is never raised.

        Raises:
            LocalProtocolError: no recipient other than ourselves.
        """
        return await send_to_many(
            self._sender,
            self._siblings.jid,
            peers,
            path,
            name=name,
            media_type=media_type,
            progress=progress,
        )

    async def is_room(self, jid: str) -> bool:
        """Whether ``jid`` is a group chat room (XEP-0045), by service
        discovery on its domain and on it."""
        return await _muc.is_room(
            self.xmpp, jid, timeout=self._settings.connect_timeout
        )

    async def room_recipients(self, room: str) -> tuple[list[str], dict[str, str]]:
        """Join ``room`` for a moment and sort its occupants: the real JIDs
        to send to (shown by the room, not ours, with a trusted
        fingerprint), and every other occupant with the reason it is
        skipped (:mod:`xfer.xmpp.muc`). The transfers still check each
        peer's fingerprint in OTR.

        Raises:
            NotSecure: the room would not let us in.
            LocalProtocolError: nobody else is in it.
        """
        view = await _muc.look_into(
            self.xmpp, room, timeout=self._settings.connect_timeout
        )
        return _muc.recipients(view, lambda jid: bool(self.trust.entries(jid)))

    async def send_stream(
        self,
        peer: str,
        source: Source,
        *,
        name: str = "stream",
        media_type: str = "application/octet-stream",
        live: bool = False,
        flush_interval: float = FLUSH_INTERVAL,
        progress: ProgressCallback = no_progress,
    ) -> SendResult:
        """Send a stream to ``peer``: the bytes of ``source`` (an async
        iterable of bytes, or an :class:`asyncio.StreamReader`) until it
        ends; its size need not be known (``spec/otr.md`` 5.4). ``source``
        is read only as fast as the receiver takes the data.

        With ``live``, data that waits for a full chunk is sealed as a short
        chunk and sent at most ``flush_interval`` seconds after it came
        (envelope format version 2); without, chunks go out when full.

        Returns once the receiver verified the whole stream and said so
        inside OTR: ``size`` and ``sha256`` are what we read, which are
        what it delivered.

        Raises:
            StreamCut: the stream broke off or was refused after it started
            ("stream cut after N verified bytes", the receiver's count when
            it said; it is not offered again). NotSecure, UntrustedPeer,
            TransferDeclined, TransferRejected, TransportError: as for
            :meth:`send_file`, before any data went.
        """
        return await self._streamer.send(
            peer,
            source,
            name=name,
            media_type=media_type,
            flush_interval=flush_interval if live else None,
            progress=progress,
        )

    # -- receiving ------------------------------------------------------------------

    def add_offer_taker(self, take: Callable[[IncomingOffer], bool]) -> None:
        """Let ``take`` see each vetted offer before it is queued for
        :meth:`next_offer`; if it returns True, it took the offer (and must
        accept or decline it). Offers that go on with a receipt under way
        never reach it."""
        self._receiver.takers.append(take)

    async def next_offer(self, timeout: float | None = None) -> IncomingOffer:
        """The next file offered to us (already checked: OTR offer, trust,
        size limit). Answer it with ``accept`` or ``decline``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else max(deadline - loop.time(), 0)
            try:
                offer = await asyncio.wait_for(self._offers.get(), left)
            except TimeoutError:
                raise TransferTimeout("no file was offered") from None
            if not offer.withdrawn:  # withdrawn offers are skipped
                return offer

    async def next_notice(self, timeout: float | None = None) -> Notice:
        """The next thing a peer sent that is not an offer xfer takes: a
        :class:`~xfer.notices.PeerMessage` (text inside OTR) or a
        :class:`~xfer.notices.RefusedOffer` (a file offered unencrypted,
        over Jingle or legacy stream initiation, and refused). Each is also
        raised as the event ``xfer_notice``. Rate-limited per account and in
        all, and at most a few dozen wait (:mod:`xfer.notices`).

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        return await self.notices.next(timeout)


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_transfer = XferTransfer


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells a file that was replaced or changed from the one seen
    (it is written whole and renamed into place): None if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
