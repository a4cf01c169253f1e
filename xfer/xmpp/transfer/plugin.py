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
5. the sealed stream flows; the receiver verifies every chunk, the final
   one, the size and the SHA-256, renames the file into place and ends the
   session with ``success`` (or the reason it failed, the file removed).

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
import contextlib
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, ClassVar

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.base import BasePlugin, register_plugin

import xfer.xmpp.ibb as _ibb
import xfer.xmpp.jingle as _jingle
import xfer.xmpp.otr as _otr
import xfer.xmpp.socks5 as _socks5
from xfer.aio import partial as _partial
from xfer.aio.pump import confirm_sealed, file_sha256, receive_sealed, send_sealed
from xfer.envelope import DEFAULT_CHUNK_SIZE, DEFAULT_SUITE, EnvelopeHeader, Sealer
from xfer.errors import (
    ConnectionFailed,
    DestinationExists,
    LocalProtocolError,
    NotSecure,
    NoUsableTransport,
    RemoteProtocolError,
    TransferRejected,
    TransferTimeout,
    TransportError,
    UntrustedPeer,
    XferError,
)
from xfer.jingle import Action, Reason, Role
from xfer.jingle.files import FileDescription, Range, Received
from xfer.jingle.wire import (
    NS_ENCRYPTED,
    NS_FILE_TRANSFER,
    NS_IBB,
    NS_JINGLE,
    NS_S5B,
    Content,
    Encrypted,
    IBBTransport,
    Jingle,
    S5BTransport,
)
from xfer.names import numbered, safe_name
from xfer.store import IdentityStore
from xfer.transfer.offer import MAX_REASON_BYTES, TransferOffer, TransferVerdict
from xfer.transfer.policy import (
    RESUMABLE,
    broke_off,
    clip,
    private_text,
    public_text,
    range_offset,
    reason_for,
)
from xfer.xmpp.jingle import rejection
from xfer.xmpp.transfer.context import Settings, Siblings
from xfer.xmpp.transfer.negotiation import (
    CONTENT,
    S5B,
    Negotiator,
    expect,
    watching,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.aio.bytestream import ByteStream
    from xfer.aio.files import ProgressCallback
    from xfer.aio.partial import Partial
    from xfer.otr.session import Session
    from xfer.otr.trust import TrustStore
    from xfer.xmpp.jingle import JingleSessionIO, XferJingle
    from xfer.xmpp.otr import ReceivedOffer, XferOTR
    from xfer.xmpp.socks5 import XferSocks5

__all__ = ["IncomingOffer", "SendResult", "XferTransfer"]

log = logging.getLogger(__name__)

#: The reason text with which a receiver that lost its OTR session (it
#: restarted) refuses an offer it could not read; the sender then renews the
#: OTR session and offers once more.
RESTARTED = "the OTR session was restarted, offer again"
#: What we announce in service discovery (XEP-0030), as XEP-0166 asks.
FEATURES = (NS_JINGLE, NS_FILE_TRANSFER, NS_S5B, NS_IBB, NS_ENCRYPTED)
#: XEP-0261 types block-size as xs:short: at most 32767 in a Jingle transport.
IBB_BLOCK_SIZE = 32767
#: Finished receipts remembered for a sender that offers one again.
MAX_FINISHED = 64
for _plugin in (_ibb.XferIBB, _socks5.XferSocks5, _jingle.XferJingle, _otr.XferOTR):
    register_plugin(_plugin)


def _no_progress(done: int, total: int | None) -> None:
    del done, total


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a finished :meth:`XferTransfer.send_file` did."""

    peer: str
    fingerprint: bytes
    name: str
    size: int
    sealed_size: int
    transport: str
    seconds: float
    setup_seconds: float
    #: Bytes the receiver already had (a resumed transfer), and how many
    #: times the transfer broke off and went on.
    resumed_from: int = 0
    breaks: int = 0


@dataclass(kw_only=True)
class IncomingOffer:
    """A file offered to us, verified as far as it can be before accepting.

    ``name``, ``size``, ``sha256``, ``media_type`` and ``mtime`` came inside
    OTR (the servers never saw them); ``name`` is the sender's, unsanitised:
    :meth:`accept` to a directory makes it safe.
    """

    peer: str
    fingerprint: bytes
    trusted: bool
    offer: TransferOffer
    sealed_size: int
    _plugin: XferTransfer = field(repr=False)
    _session: JingleSessionIO = field(repr=False)
    _initiate: Jingle = field(repr=False)
    _key: bytes = field(repr=False)
    _header: EnvelopeHeader = field(repr=False)
    _got: ReceivedOffer = field(repr=False)
    _answered: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.offer.name

    @property
    def size(self) -> int:
        return self.offer.size

    @property
    def sha256(self) -> bytes:
        return self.offer.sha256

    @property
    def media_type(self) -> str:
        return self.offer.media_type

    @property
    def mtime(self) -> int:
        return self.offer.mtime

    @property
    def transfer_id(self) -> bytes:
        return self.offer.transfer_id

    def _claim(self) -> None:
        if self._answered:
            raise LocalProtocolError("this offer was already answered")
        self._answered = True

    async def decline(self, text: str | None = None) -> None:
        """Say no: the sender gets ``decline``."""
        self._claim()
        await self._session.terminate(Reason.DECLINE, text)

    async def accept(
        self,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: ProgressCallback = _no_progress,
    ) -> Path:
        """Receive the file into ``dest`` (a directory: under the sanitised
        name, numbered if taken) and return its path once it is verified.

        Raises:
            IntegrityError, EnvelopeFormatError: the data was not authentic.
            TransportError: no transport worked or it broke.
            TransferRejected: the sender cancelled.
            DestinationExists: ``dest`` is a file and ``overwrite`` is false.
        Whatever fails, nothing is left at the destination.
        """
        self._claim()
        path, partial = await asyncio.to_thread(
            self._plugin._place, self, Path(dest), overwrite
        )
        if path is None:
            await self._session.terminate(Reason.DECLINE, "destination exists")
            raise DestinationExists(dest)
        return await self._plugin._receive(self, path, overwrite, progress, partial)

    def resumes_from(self, dest: str | os.PathLike[str]) -> int:
        """How many bytes of this file an earlier, broken receipt into
        ``dest`` kept (0 if none): :meth:`accept` to the same place goes on
        from there. Blocking (it looks at the directory)."""
        found = self._plugin._find_partial(self, Path(dest))
        return found.state.verified if found is not None else 0


def _destination(dest: Path, name: str, overwrite: bool) -> Path | None:
    """Where to write: in a directory, the sanitised name, numbered if it is
    taken (unless ``overwrite``); a file path as given; None if it exists."""
    if not dest.is_dir():
        return None if dest.exists() and not overwrite else dest
    clean = safe_name(name)
    candidate = dest / clean
    n = 1
    while not overwrite and (candidate.exists() or candidate.is_symlink()):
        n += 1
        candidate = dest / numbered(clean, n)
    return candidate


class XferTransfer(BasePlugin):
    """``client.register_plugin("xfer_transfer", config, module=xfer.xmpp.transfer)``.

    Config:
        identity: an :class:`~xfer.store.IdentityStore` or its directory (the
            OTR key, instance tag and trust store; created if missing).
        accept_untrusted: also offer files from (and send files to) peers
            whose fingerprint is not trusted; default False.
        max_size: largest plaintext accepted, in bytes (None: no limit).
        socks5_direct / socks5_proxy: offer our own SOCKS5 streamhost / the
            server's proxy as candidates (we always try the peer's).
        ibb: allow falling back to In-Band Bytestreams.
        advertise: [(host, port)] to announce as our direct SOCKS5 candidates
            instead of the listening address (a port forward, or tests).
        chunk_size, suite, workers: envelope parameters for sending.
        offer_timeout: how long a sent offer waits for an answer (s).
        connect_timeout: for the OTR set-up and each transport step (s).
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
        "chunk_size": DEFAULT_CHUNK_SIZE,
        "suite": DEFAULT_SUITE,
        "workers": 2,
        "offer_timeout": 300.0,
        "connect_timeout": 30.0,
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
        self._offers: asyncio.Queue[IncomingOffer] = asyncio.Queue(
            maxsize=self.config["max_pending_offers"]
        )
        self._tasks: set[asyncio.Future[None]] = set()
        #: Receipts in progress, by :func:`_receipt_key`: a new offer of the
        #: same file from the same sender continues one.
        self._receipts: dict[tuple[str, bytes, int, str], _Receipt] = {}
        #: Receipts finished lately, by the same key: the sender may not have
        #: heard of the end (its connection dropped) and offer the rest again.
        self._finished: dict[tuple[str, bytes, int, str], _Finished] = {}
        #: Set while we are connected (a resumed XEP-0198 stream included).
        self.online = asyncio.Event()
        #: How often the connection dropped: a failure during which it did
        #: may be the network's, not the peer's.
        self._drops = 0
        self.xmpp.add_event_handler("session_start", self._on_online)
        self.xmpp.add_event_handler("session_resumed", self._on_resumed)
        self.xmpp.add_event_handler("disconnected", self._on_offline)
        if getattr(self.xmpp, "_session_started", False):
            self.online.set()
        identity = self.config["identity"]
        if identity is not None:
            store = (
                identity
                if isinstance(identity, IdentityStore)
                else IdentityStore(identity)
            )
            self.identity: IdentityStore | None = store
            self.otr.set_identity(
                store.private_key(),
                instance_tag=store.instance_tag(),
                trust_store=store.trust_store(),
            )
            self.otr.config["on_trust_change"] = store.save_trust_store
        else:
            self.identity = None
        if self.config["accept_untrusted"] is False:
            # Offers from untrusted fingerprints would only be refused: do
            # not keep them at all.
            self.otr.config["untrusted_offers"] = 0
        self.jingle.on_initiate = self._on_initiate
        self._negotiator = Negotiator(Settings(self.config), Siblings(self.xmpp))
        disco = self.xmpp.plugin["xep_0030"]
        for feature in FEATURES:
            disco.add_feature(feature)

    def _on_online(self, _event: object) -> None:
        self.online.set()

    def _on_offline(self, _event: object) -> None:
        self.online.clear()
        self._drops += 1

    async def _on_resumed(self, _event: object) -> None:
        """A resumed XEP-0198 session counts as online once the server
        answers on it.

        Prosody 0.12 can resume a session whose connection broke in the
        middle of a stanza and then process nothing more from it. Such a
        stream is dropped, with its resumption token, so that the client's
        reconnection binds a fresh session instead.
        """
        try:
            await self.xmpp.plugin["xep_0199"].ping(
                JID(self.xmpp.boundjid.domain), timeout=self.config["resume_check"]
            )
        except IqError:
            pass  # an answer, even an error, is a live stream
        except IqTimeout:
            log.warning("the resumed XMPP session is dead; starting a new one")
            sm: Any = self.xmpp.plugin["xep_0198"]
            sm.sm_id = None
            transport = self.xmpp.transport
            if transport is not None:
                transport.abort()
            return
        self.online.set()

    # -- the other plugins -------------------------------------------------------

    @property
    def otr(self) -> XferOTR:
        plugin: XferOTR = self.xmpp.plugin["xfer_otr"]  # type: ignore[typeddict-item]
        return plugin

    @property
    def jingle(self) -> XferJingle:
        plugin: XferJingle = self.xmpp.plugin["xfer_xep_0166"]  # type: ignore[typeddict-item]
        return plugin

    @property
    def socks5(self) -> XferSocks5:
        plugin: XferSocks5 = self.xmpp.plugin["xfer_socks5"]  # type: ignore[typeddict-item]
        return plugin

    @property
    def ibb(self) -> _ibb.XferIBB:
        plugin: _ibb.XferIBB = self.xmpp.plugin["xfer_ibb"]  # type: ignore[typeddict-item]
        return plugin

    @property
    def trust(self) -> TrustStore:
        return self.otr.trust

    def _trust_ok(self, peer: str, fingerprint: bytes) -> bool:
        policy = self.config["accept_untrusted"]
        if callable(policy):
            return bool(policy(peer, fingerprint))
        return bool(policy) or self.trust.is_trusted(peer, fingerprint)

    # -- sending -------------------------------------------------------------------

    async def send_file(
        self,
        peer: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        media_type: str = "application/octet-stream",
        progress: ProgressCallback = _no_progress,
    ) -> SendResult:
        """Send the file at ``path`` to ``peer`` (a full or bare JID).

        Returns once the receiver verified and stored it.

        Raises:
            NotSecure: no OTR session could be set up. UntrustedPeer: the
            peer's fingerprint is not trusted. TransferDeclined,
            TransferRejected: the receiver said no or failed (``reason``).
            TransportError (NoUsableTransport, TransferTimeout...).
            OSError: the file could not be read.
        """
        source = Path(path)
        started = time.perf_counter()
        stat = await asyncio.to_thread(source.stat)
        if not S_ISREG(stat.st_mode):
            raise IsADirectoryError(f"{source} is not a regular file")
        digest = await file_sha256(source)
        drops = self._drops
        breaks = 0
        try:
            full, otr_session = await self.otr.secure(
                peer, timeout=self.config["connect_timeout"]
            )
        except NotSecure as exc:
            if self._drops == drops:
                raise
            breaks += 1  # our connection dropped during the AKE
            full, otr_session = await self._after_break(peer, peer, breaks, exc)
        renewed = False
        while True:
            drops = self._drops
            # The AKE that made the keys this offer goes out under. (The
            # session object stays the same when the peer re-keys it, so the
            # id must be taken now, not after a refusal.)
            offered_under = otr_session.ssid
            fingerprint = otr_session.their_fingerprint
            assert fingerprint is not None
            if not self._trust_ok(full, fingerprint):
                raise UntrustedPeer(full, fingerprint)
            accepted: list[bool] = []  # set once the receiver took the offer
            try:
                result = await self._offer(
                    full,
                    otr_session,
                    fingerprint,
                    source,
                    stat,
                    digest,
                    name,
                    media_type,
                    progress,
                    accepted,
                )
                return dataclasses.replace(
                    result, seconds=time.perf_counter() - started, breaks=breaks
                )
            except TransferRejected as exc:
                if RESTARTED in (exc.text or "") and not renewed:
                    # The receiver restarted and could not read the offer.
                    renewed = True
                    otr_session = await self.otr.renewed(
                        full, offered_under, timeout=self.config["connect_timeout"]
                    )
                    continue
                if not (accepted and exc.reason in RESUMABLE):
                    raise
                broken: XferError = exc
            except TransportError as exc:
                # Before the receiver took the offer, only our connection
                # dropping (or the peer's) is worth another offer.
                lost = isinstance(exc, ConnectionFailed) or self._drops != drops
                if not (accepted or lost):
                    raise
                broken = exc
            breaks += 1
            renewed = False
            if breaks > self.config["resume_attempts"]:
                raise broken
            log.info("transfer to %s broke off (%s); resuming", full, broken)
            full, otr_session = await self._after_break(peer, full, breaks, broken)

    async def _after_break(
        self, peer: str, full: str, breaks: int, broken: XferError
    ) -> tuple[str, Session]:
        """Wait (1, 2, 4... s by default), be online again, and have a secure OTR
        session with the peer, to offer the rest of a transfer.

        Raises ``broken`` if that cannot happen in time."""
        first = self.config["resume_backoff"]
        await asyncio.sleep(
            min(first * 2 ** (breaks - 1), self.config["resume_backoff_max"])
        )
        timeout = self.config["connect_timeout"]
        try:
            await asyncio.wait_for(self.online.wait(), self.config["resume_wait"])
            # The same resource if it is still there, else any of the account.
            return await self.otr.secure(full, timeout=timeout)
        except (TimeoutError, XferError):
            if full == peer:
                raise broken from None
        try:
            return await self.otr.secure(peer, timeout=timeout)
        except XferError:
            raise broken from None

    async def _offer(
        self,
        full: str,
        otr_session: Session,
        fingerprint: bytes,
        source: Path,
        stat: os.stat_result,
        digest: bytes,
        name: str | None,
        media_type: str,
        progress: ProgressCallback,
        accepted: list[bool],
    ) -> SendResult:
        """One offer of the file over ``otr_session`` with ``full``, whose
        ``fingerprint`` the caller checked.

        The sender reports the file delivered only on the receiver's verdict,
        which comes inside OTR from that fingerprint: a Jingle ``success`` is
        not authenticated, and a server could forge it.

        The receiver may answer with ``<range offset/>``: it kept that much
        of the file from an earlier, broken transfer; then only the rest is
        sealed, under this offer's fresh key. ``accepted`` gets an entry
        once the receiver accepted (a break after that is worth resuming).
        """
        offer = TransferOffer(
            transfer_id=os.urandom(16),
            salt=os.urandom(32),
            suite=int(self.config["suite"]),
            chunk_size=self.config["chunk_size"],
            size=stat.st_size,
            sha256=digest,
            name=name or source.name,
            media_type=media_type,
            mtime=max(0, int(stat.st_mtime)),
        )
        verdict = self.otr.expect_verdict(full, offer.transfer_id, fingerprint)
        try:
            key = self.otr.send_offer(otr_session, offer, fingerprint=fingerprint)
        except BaseException:
            self.otr.forget_verdict(offer.transfer_id)
            raise
        sealer = Sealer.announced(
            key,
            salt=offer.salt,
            transfer_id=offer.transfer_id,
            suite=self.config["suite"],
            chunk_size=offer.chunk_size,
            executor=_executor(),
            workers=self.config["workers"],
        )
        sealed_size = sealer.header.sealed_size(offer.size)
        session = self.jingle.initiate(full)
        setup, kind, start = 0.0, "", 0
        s5b: S5B | None = None
        written: list[bool] = []  # set once the last sealed byte is written
        try:
            transport, s5b = await self._negotiator.local_transport(session)
            # An empty range: we can send the rest of the file (XEP-0234).
            description = FileDescription(
                name=f"{offer.transfer_id.hex()}.xfer", size=sealed_size, range=Range()
            )
            await session.send(
                session.jingle(
                    Action.SESSION_INITIATE,
                    initiator=self.xmpp.boundjid.full,
                    contents=(
                        Content(
                            name=CONTENT,
                            creator=Role.INITIATOR,
                            senders="initiator",
                            description=description,
                            application=NS_FILE_TRANSFER,
                            transport=transport,
                            encrypted=Encrypted(transfer_id=offer.transfer_id),
                        ),
                    ),
                )
            )
            accept = await expect(
                session, {Action.SESSION_ACCEPT}, self.config["offer_timeout"]
            )
            accepted.append(True)
            start = range_offset(accept, offer.size)
            setup_start = time.perf_counter()
            stream, kind = await self._negotiator.negotiate(
                session, transport, s5b, accept
            )
            setup = time.perf_counter() - setup_start
            await watching(
                session,
                send_sealed(
                    source,
                    stream,
                    sealer,
                    total=offer.size,
                    start=start,
                    progress=progress,
                    on_written=lambda: written.append(True),
                    stall_timeout=self.config["stall_timeout"],
                ),
                stream,
            )
            # The receiver verifies, stores, then ends the session with its verdict.
            await expect(session, set(), self.config["offer_timeout"])
        except TransferRejected as exc:
            # "success" counts only once the whole sealed stream went out,
            # and only with the receiver's verdict inside OTR.
            if exc.reason == Reason.SUCCESS.value and written:
                await self._verified(verdict, full, offer)
                return SendResult(
                    peer=full,
                    fingerprint=fingerprint,
                    name=offer.name,
                    size=offer.size,
                    sealed_size=sealer.header.sealed_size(offer.size - start),
                    transport=kind,
                    seconds=0.0,
                    setup_seconds=setup,
                    resumed_from=start,
                )
            if exc.reason == Reason.SUCCESS.value:
                raise RemoteProtocolError(
                    f"{full} claimed success before the file was sent"
                ) from None
            said = _refusal(verdict)
            if said is not None:  # the receiver's own words, from inside OTR
                raise type(exc)(
                    f"{full} refused the file: {said}", reason=exc.reason, text=said
                ) from None
            raise
        except BaseException as exc:
            await session.terminate(reason_for(exc), public_text(exc, receiving=False))
            raise
        finally:
            self.otr.forget_verdict(offer.transfer_id)
            self.jingle.forget(session)
            if s5b is not None:
                s5b.close()
        raise RemoteProtocolError(
            "the receiver never ended the session"
        )  # pragma: no cover

    async def _verified(
        self,
        verdict: asyncio.Future[TransferVerdict],
        full: str,
        offer: TransferOffer,
    ) -> None:
        """Wait for the receiver's verdict after its Jingle ``success``.

        Raises:
            RemoteProtocolError: no verdict in time (the ``success`` may
            have been forged), or one that does not match the file.
            TransferRejected: the receiver refused the file after all.
        """
        try:
            got = await asyncio.wait_for(
                asyncio.shield(verdict), self.config["connect_timeout"]
            )
        except TimeoutError:
            raise RemoteProtocolError(
                f"{full} did not confirm inside OTR that it stored the file; "
                "the Jingle success is not believed"
            ) from None
        if not got.stored:
            raise TransferRejected(
                f"{full} refused the file: {got.reason}",
                reason=Reason.SECURITY_ERROR.value,
                text=got.reason,
            )
        if got.sha256 != offer.sha256 or got.size != offer.size:
            raise RemoteProtocolError(f"{full} stored a file that is not the one sent")

    # -- receiving ------------------------------------------------------------------

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
            if not offer._session.ended:  # withdrawn offers are skipped
                return offer

    def _on_initiate(self, session: JingleSessionIO, jingle: Jingle) -> None:
        task = asyncio.ensure_future(self._vet(session, jingle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _vet(self, session: JingleSessionIO, jingle: Jingle) -> None:
        """Check an offer before the application sees it; end it if it fails."""
        refusal = self._refusal(session, jingle)
        if refusal is not None:
            await session.terminate(*refusal)
            return
        content = jingle.content
        assert content is not None
        assert content.description is not None
        assert content.encrypted is not None
        got = await self.otr.claim_offer(
            session.peer,
            content.encrypted.transfer_id,
            timeout=self.config["otr_offer_wait"],
        )
        if got is None:
            text = "no matching offer inside OTR"
            if self.otr.refused_offer(content.encrypted.transfer_id):
                text = "fingerprint not trusted"
            elif self.otr.lost_offers(session.peer):
                text += f"; {RESTARTED}"
            await session.terminate(Reason.SECURITY_ERROR, text)
            return
        try:
            header = EnvelopeHeader(
                suite=got.offer.suite,  # type: ignore[arg-type]
                chunk_size=got.offer.chunk_size,
                salt=got.offer.salt,
                transfer_id=got.offer.transfer_id,
            )
        except XferError:  # an unknown suite or a chunk size out of range
            await session.terminate(
                Reason.SECURITY_ERROR, "the OTR offer names unusable parameters"
            )
            return
        sealed = header.sealed_size(got.offer.size)
        if content.description.size != sealed:
            await session.terminate(
                Reason.SECURITY_ERROR, "the Jingle size does not match the OTR offer"
            )
            return
        if not self._trust_ok(got.peer, got.fingerprint):
            await session.terminate(Reason.SECURITY_ERROR, "fingerprint not trusted")
            return
        limit = self.config["max_size"]
        if limit is not None and got.offer.size > limit:
            await session.terminate(Reason.MEDIA_ERROR, "the file is too large")
            return
        incoming = self._incoming(session, jingle, got, header, sealed)
        # Only now, the offer vetted, may the peer learn that we are online
        # and when we go (directed presence).
        self.jingle.announce(session.peer)
        if self._continues(incoming) or self._confirms(incoming):
            return
        if self._offers.full() or not incoming.trusted:
            self._drop_withdrawn()
        if not incoming.trusted and (
            sum(1 for o in self._queued() if not o.trusted)
            >= self.config["max_untrusted_offers"]
        ):
            # Untrusted senders (accept_untrusted) share a small part of the
            # queue: throw-away accounts cannot crowd out trusted offers.
            await session.terminate(Reason.BUSY, "too many offers waiting")
            return
        try:
            self._offers.put_nowait(incoming)
        except asyncio.QueueFull:
            await session.terminate(Reason.BUSY, "too many offers waiting")
            return
        self.xmpp.event("xfer_offer", incoming)

    def _queued(self) -> list[IncomingOffer]:
        """The offers waiting for the application, in order."""
        waiting = []
        while not self._offers.empty():
            waiting.append(self._offers.get_nowait())
        for offer in waiting:
            self._offers.put_nowait(offer)
        return waiting

    def _drop_withdrawn(self) -> None:
        """Forget queued offers whose sender gave up, to make room."""
        waiting = []
        while not self._offers.empty():
            waiting.append(self._offers.get_nowait())
        for offer in waiting:
            if not offer._session.ended:
                self._offers.put_nowait(offer)

    def _refusal(
        self, session: JingleSessionIO, jingle: Jingle
    ) -> tuple[Reason, str | None] | None:
        """Why an offer is refused before looking inside OTR, if it is."""
        if self.jingle.offered_by(_bare(session.peer)) > self.config["max_per_peer"]:
            return Reason.BUSY, "too many transfers at once"
        content = jingle.content
        if (
            content is None
            or content.description is None
            or len(jingle.contents) != 1
            or content.senders != "initiator"
        ):
            return Reason.UNSUPPORTED_APPLICATIONS, "xfer takes one file per session"
        if content.transport is None:
            return Reason.UNSUPPORTED_TRANSPORTS, None
        if content.encrypted is None:
            return Reason.SECURITY_ERROR, "xfer accepts only end-to-end encrypted files"
        return None

    def _continues(self, incoming: IncomingOffer) -> bool:
        """Hand an offer of a file we are receiving (or waiting to go on
        with) from the same sender to that receipt, instead of the queue."""
        receipt = self._receipts.get(_receipt_key(incoming))
        if receipt is None or receipt.fingerprint != incoming.fingerprint:
            return False
        if receipt.next.done():
            return False
        incoming._claim()
        receipt.next.set_result(incoming)
        if receipt.task is not None and not receipt.task.done():
            receipt.task.cancel()  # its stream is dead; the sender went on
        return True

    def _confirms(self, incoming: IncomingOffer) -> bool:
        """Answer an offer of a file we finished receiving from the same
        sender a moment ago ourselves: ask for the (empty) rest, check it
        and the file, and end with ``success``, instead of asking the user
        about the same file again."""
        now = time.monotonic()
        for key, entry in list(self._finished.items()):
            if entry.expires < now:
                del self._finished[key]
        finished = self._finished.get(_receipt_key(incoming))
        if finished is None or finished.fingerprint != incoming.fingerprint:
            return False
        content = incoming._initiate.content
        description = content.description if content is not None else None
        if description is None or description.range is None:
            return False  # it cannot send "nothing more": a plain new offer
        try:
            st = finished.path.lstat()
        except OSError:
            return False  # moved since: offer it to the user again
        if not S_ISREG(st.st_mode) or st.st_size != incoming.size:
            return False  # changed since: likewise
        incoming._claim()
        task = asyncio.ensure_future(self._confirm(incoming, finished.path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _confirm(self, incoming: IncomingOffer, path: Path) -> None:
        with contextlib.suppress(XferError, OSError):
            await self._receive_once(
                incoming, path, False, _no_progress, None, finished=True
            )
            log.info("confirmed %s to %s again", path.name, incoming.peer)

    def _incoming(
        self,
        session: JingleSessionIO,
        jingle: Jingle,
        got: ReceivedOffer,
        header: EnvelopeHeader,
        sealed: int,
    ) -> IncomingOffer:
        return IncomingOffer(
            peer=got.peer,
            fingerprint=got.fingerprint,
            trusted=self.trust.is_trusted(got.peer, got.fingerprint),
            offer=got.offer,
            sealed_size=sealed,
            _plugin=self,
            _session=session,
            _initiate=jingle,
            _key=got.key,
            _header=header,
            _got=got,
        )

    def _find_partial(self, incoming: IncomingOffer, dest: Path) -> Partial | None:
        """An earlier receipt of this file from this sender into ``dest``."""
        directory = dest if dest.is_dir() else dest.parent
        found = _partial.find(
            directory,
            peer=_bare(incoming.peer),
            fingerprint=incoming.fingerprint,
            sha256=incoming.sha256,
            size=incoming.size,
        )
        if found is None or (not dest.is_dir() and found.state.dest != dest.name):
            return None
        return found

    def _place(
        self, incoming: IncomingOffer, dest: Path, overwrite: bool
    ) -> tuple[Path | None, Partial | None]:
        """Where to write (see :func:`_destination`), and the partial receipt
        to go on with, if any (blocking). Old partial files go first."""
        directory = dest if dest.is_dir() else dest.parent
        if directory.is_dir():
            _partial.sweep(directory, self.config["partial_max_age"])
        found = self._find_partial(incoming, dest)
        if found is not None and dest.is_dir():
            path = _destination(dest / found.state.dest, incoming.name, overwrite)
            if path is not None:
                return path, found
        path = _destination(dest, incoming.name, overwrite)
        if path is None:
            return None, None
        if found is not None and path.name == found.state.dest:
            return path, found
        return path, None

    async def _receive(
        self,
        incoming: IncomingOffer,
        path: Path,
        overwrite: bool,
        progress: ProgressCallback,
        partial: Partial | None,
    ) -> Path:
        """Receive into ``path``; when the transfer breaks off, keep the
        verified prefix and go on with the sender's next offer of the file."""
        if partial is None:
            partial = _partial.new_partial(
                path,
                peer=_bare(incoming.peer),
                fingerprint=incoming.fingerprint,
                sha256=incoming.sha256,
                size=incoming.size,
            )
        key = _receipt_key(incoming)
        loop = asyncio.get_running_loop()
        receipt = _Receipt(fingerprint=incoming.fingerprint, next=loop.create_future())
        self._receipts.setdefault(key, receipt)
        breaks = 0
        done = False
        stored: list[bool] = []  # set once the verified file is in place
        try:
            while True:
                receipt.task = asyncio.ensure_future(
                    self._receive_once(
                        incoming,
                        path,
                        overwrite,
                        progress,
                        partial,
                        on_stored=lambda: stored.append(True),
                    )
                )
                try:
                    await receipt.task
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not receipt.next.done() or (task and task.cancelling()):
                        raise
                    # The sender offered the rest while our stream still hung
                    # (or just as the file went into place: confirm that offer).
                    if stored:
                        await self._confirm(receipt.next.result(), path)
                except (TransportError, TransferRejected) as exc:
                    # Stored already, the sender hears of it when it offers again.
                    if not stored:
                        breaks += 1
                        await self._await_rest(receipt, incoming, exc, breaks)
                else:
                    stored.append(True)  # it finished: the file is in place
                if stored:
                    done = True
                    return self._remember(key, incoming, path)
                incoming = receipt.next.result()
                receipt.next = loop.create_future()
        finally:
            if self._receipts.get(key) is receipt:
                del self._receipts[key]
            if not done and not self.config["keep_partial"]:
                await asyncio.to_thread(partial.remove)

    async def _await_rest(
        self, receipt: _Receipt, incoming: IncomingOffer, exc: XferError, breaks: int
    ) -> None:
        """After a break, wait for the sender's offer of the rest; raise
        ``exc`` if it was not a break, or no such offer comes in time."""
        if not broke_off(exc) or breaks > self.config["resume_attempts"]:
            raise exc
        log.info("receipt from %s broke off (%s)", incoming.peer, exc)
        try:
            await asyncio.wait_for(
                asyncio.shield(receipt.next), self.config["resume_wait"]
            )
        except TimeoutError:
            raise exc from None

    def _remember(
        self, key: tuple[str, bytes, int, str], incoming: IncomingOffer, path: Path
    ) -> Path:
        """Note a finished receipt for :meth:`_confirms`; return its path."""
        self._finished[key] = _Finished(
            fingerprint=incoming.fingerprint,
            path=path,
            expires=time.monotonic() + self.config["resume_wait"],
        )
        while len(self._finished) > MAX_FINISHED:
            del self._finished[next(iter(self._finished))]
        return path

    async def _receive_once(
        self,
        incoming: IncomingOffer,
        path: Path,
        overwrite: bool,
        progress: ProgressCallback,
        partial: Partial | None,
        *,
        finished: bool = False,
        on_stored: Callable[[], object] | None = None,
    ) -> None:
        """One Jingle session of a receipt (the first, or one that goes on),
        or, when ``finished``, of one already stored at ``path``: then the
        rest asked for is empty (see :meth:`_confirms`)."""
        session = incoming._session
        content = incoming._initiate.content
        assert content is not None
        assert content.transport is not None
        assert content.description is not None
        if finished:
            start = incoming.size
        else:
            assert partial is not None
            start = await _resume_point(partial, content.description.range)
        description = dataclasses.replace(
            content.description, range=Range(offset=start) if start else None
        )
        s5b: S5B | None = None
        waiter: asyncio.Future[_ibb.IBBStream] | None = None
        try:
            if session.ended:
                # The sender's reason says whether it will offer the rest.
                raise (
                    rejection(session.peer, session.terminated)
                    if session.terminated is not None
                    else TransferRejected(
                        "the sender withdrew the offer", reason=Reason.CANCEL.value
                    )
                )
            if isinstance(content.transport, IBBTransport):
                if not self.config["ibb"]:
                    raise NoUsableTransport("the sender offers only IBB, which is off")
                offered = content.transport
                ours: S5BTransport | IBBTransport = IBBTransport(
                    sid=offered.sid,
                    block_size=self._negotiator.ibb_block(offered),
                )
                waiter = self.ibb.expect(session.peer, offered.sid)
            else:
                ours, s5b = await self._negotiator.local_transport(
                    session, sid=content.transport.sid
                )
            await session.send(
                session.jingle(
                    Action.SESSION_ACCEPT,
                    responder=self.xmpp.boundjid.full,
                    contents=(
                        Content(
                            name=content.name,
                            creator=content.creator,
                            senders="initiator",
                            description=description,
                            application=NS_FILE_TRANSFER,
                            transport=ours,
                            encrypted=content.encrypted,
                        ),
                    ),
                )
            )
            if waiter is not None:
                stream: ByteStream = await self._negotiator.await_stream(
                    session, waiter
                )
            else:
                stream, _ = await self._negotiator.negotiate(
                    session,
                    ours,
                    s5b,
                    incoming._initiate,
                )
            rest = incoming._header.sealed_size(incoming.size - start)
            stall = self.config["stall_timeout"]
            await watching(
                session,
                confirm_sealed(
                    stream,
                    incoming._key,
                    incoming.offer,
                    path,
                    sealed_size=rest,
                    stall_timeout=stall,
                )
                if finished
                else receive_sealed(
                    stream,
                    incoming._key,
                    incoming.offer,
                    path,
                    sealed_size=rest,
                    overwrite=overwrite,
                    progress=progress,
                    executor=_executor(),
                    partial=partial,
                    keep=self._keep,
                    stall_timeout=stall,
                    on_stored=on_stored,
                ),
                stream,
                drain=True,
            )
        except BaseException as exc:
            await self._failed(incoming, exc)
            raise
        finally:
            self.jingle.forget(session)
            if s5b is not None:
                s5b.close()
            if waiter is not None and not waiter.done():
                waiter.cancel()
        # The verdict the sender believes goes inside OTR; Jingle's end follows.
        self._tell(incoming, stored=True)
        with contextlib.suppress(XferError):
            await session.send(
                session.jingle(Action.SESSION_INFO, info=Received(content=content.name))
            )
        await session.terminate(Reason.SUCCESS)

    async def _failed(self, incoming: IncomingOffer, exc: BaseException) -> None:
        """A receipt failed: say why to the sender inside OTR (unless it only
        broke off, to go on), and end the Jingle session with a reason the
        servers may read."""
        if isinstance(exc, XferError | OSError) and not broke_off(exc):
            self._tell(incoming, stored=False, why=private_text(exc))
        await incoming._session.terminate(
            reason_for(exc), public_text(exc, receiving=True)
        )

    def _tell(self, incoming: IncomingOffer, *, stored: bool, why: str = "") -> None:
        """Send the sender our verdict on its offer, inside OTR."""
        verdict = TransferVerdict(
            transfer_id=incoming.transfer_id,
            stored=stored,
            sha256=incoming.sha256 if stored else bytes(32),
            size=incoming.size if stored else 0,
            reason=clip(why, MAX_REASON_BYTES),
        )
        try:
            self.otr.send_verdict(incoming._got, verdict)
        except NotSecure as exc:
            log.warning("could not tell %s the verdict: %s", incoming.peer, exc)

    def _keep(self, exc: BaseException | None) -> bool:
        """Whether a receipt that ended with ``exc`` keeps its verified prefix:
        when it broke off (to go on in a moment), or was stopped on either
        side and may be offered again (``keep_partial``); never when the
        data was not authentic."""
        if broke_off(exc) or isinstance(exc, asyncio.CancelledError):
            # (A cancelled receipt is either going on with a new offer, or
            # ends here: then _receive removes what keep_partial does not keep.)
            return True
        stopped = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, TransferRejected) and exc.reason == Reason.CANCEL.value
        )
        return stopped and bool(self.config["keep_partial"])


@dataclass(kw_only=True)
class _Receipt:
    """A receipt in progress, waiting for the sender's offers of the rest."""

    fingerprint: bytes
    next: asyncio.Future[IncomingOffer]
    task: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Finished:
    """A receipt that finished lately (see ``XferTransfer._confirms``)."""

    fingerprint: bytes
    path: Path
    expires: float


async def _resume_point(partial: Partial, offered: Range | None) -> int:
    """Where a receipt goes on: after its verified prefix, or from the start
    when the sender cannot send part of a file (no ``<range/>`` offered) or
    the prefix is gone (removed while we waited)."""
    start = partial.state.verified
    if start and (
        offered is None or not await asyncio.to_thread(_holds, partial.part, start)
    ):
        await asyncio.to_thread(partial.remove)
        partial.state = dataclasses.replace(partial.state, verified=0)
        start = 0
    return start


def _holds(path: Path, length: int) -> bool:
    """Whether ``path`` is a kept prefix of ours (see
    :func:`xfer.aio.partial.adoptable`) of at least ``length`` bytes."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return _partial.adoptable(st) and st.st_size >= length


def _bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def _receipt_key(offer: IncomingOffer) -> tuple[str, bytes, int, str]:
    """The same file from the same account: a new offer of it goes on with
    (or confirms) the receipt. The name counts: one content sent under two
    names is two files."""
    return _bare(offer.peer), offer.sha256, offer.size, offer.name


def _refusal(verdict: asyncio.Future[TransferVerdict]) -> str | None:
    """The receiver's reason, if its verdict came and refused the file."""
    if verdict.done() and not verdict.cancelled():
        got = verdict.result()
        if not got.stored:
            return got.reason
    return None


_EXECUTOR: list[ThreadPoolExecutor] = []


def _executor() -> ThreadPoolExecutor:
    """Threads that seal or open runs of chunks in parallel (shared, lazy):
    with the calling thread, a transfer uses both cores of a small machine."""
    if not _EXECUTOR:
        _EXECUTOR.append(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="xfer-crypto")
        )
    return _EXECUTOR[0]


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_transfer = XferTransfer
