"""The sender: the resume loop of one file, one offer, the verdict wait.

An offer goes out inside OTR (TLV 8) and as a Jingle session; it names the
file by an id that costs no read of the whole file. The file is read once,
sealed and hashed in the same pass, and the SHA-256 follows the sealed
stream inside OTR (the digest). The file counts as delivered only on the
receiver's verdict inside OTR. A transfer that breaks off after the
receiver accepted is offered again, for the rest, under a fresh key; then
the prefix the receiver kept is read once more, for the digest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xfer.aio.pump import send_sealed
from xfer.aio.source import identify, sha256_prefix
from xfer.envelope import Sealer
from xfer.errors import (
    ConnectionFailed,
    NotSecure,
    PeerIncapable,
    PeerOffline,
    RemoteProtocolError,
    TransferRejected,
    TransportError,
    UntrustedPeer,
    XferError,
)
from xfer.jingle import Action, Reason, Role
from xfer.jingle.files import FileDescription, Range
from xfer.jingle.wire import NS_FILE_TRANSFER, Content, Encrypted
from xfer.transfer.offer import TransferDigest, TransferOffer
from xfer.transfer.policy import RESUMABLE, public_text, range_offset, reason_for
from xfer.xmpp.transfer.context import RESTARTED, crypto_executor
from xfer.xmpp.transfer.negotiation import CONTENT, S5B, expect, settle, watching
from xfer.xmpp.transfer.rejoin import Retry, gave_up, unless_bounced

if TYPE_CHECKING:
    import hashlib
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from xfer.aio.bytestream import ByteStream, ProgressCallback
    from xfer.aio.source import Identified
    from xfer.jingle.wire import IBBTransport, Jingle, S5BTransport
    from xfer.otr.session import Session
    from xfer.transfer.offer import TransferVerdict
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.reach import Reach
    from xfer.xmpp.transfer.context import Context
    from xfer.xmpp.transfer.negotiation import Negotiator
    from xfer.xmpp.transfer.rejoin import Finder

    #: The file's pieces from a byte offset on (:func:`xfer.aio.pump.send_sealed`).
    Reader = Callable[[int], AsyncGenerator[bytes, None]]

log = logging.getLogger(__name__)


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
    #: The SHA-256 of the whole file, as the receiver stored it.
    sha256: bytes = b""
    #: Where the data went: a streamhost's ``host:port``, a proxy's JID, or
    #: "" (IBB); see :class:`~xfer.xmpp.transfer.candidates.Route`.
    via: str = ""
    #: Seconds from the last of the peer's candidates failing to the stream
    #: being ready (proxy or IBB after all failed), or None.
    after_failure: float | None = None


@dataclass(kw_only=True)
class _Attempt:
    """How far one offer got."""

    #: The receiver took the offer: a break after this is worth resuming.
    accepted: bool = False
    #: The last sealed byte is written (and the digest sent).
    written: bool = False
    #: The SHA-256 of the whole file, once it is read.
    sha256: bytes = b""


class Sender:
    """Sends files: offers each, and offers the rest after a break."""

    def __init__(
        self, context: Context, negotiator: Negotiator, reach: Reach, finder: Finder
    ) -> None:
        self._finder = finder
        self._settings = context.settings
        self._siblings = context.siblings
        self._trust_ok = context.trust_ok
        self._liveness = context.liveness
        self._negotiator = negotiator
        self._reach = reach

    async def send(
        self,
        peer: str,
        path: str | os.PathLike[str],
        name: str | None,
        media_type: str,
        progress: ProgressCallback,
        check_source: Callable[[], None] | None = None,
        reader: Reader | None = None,
        read_sha256: Callable[[int], bytes] | None = None,
    ) -> SendResult:
        """See :meth:`XferTransfer.send_file`. ``reader``, if given, gives
        the file's pieces from a byte offset on (a file read once for
        several recipients: :mod:`xfer.xmpp.transfer.many`);
        ``read_sha256(size)``, if given, the SHA-256 of the ``size`` bytes
        ``reader(0)`` gave (hashed once for all recipients), so that a
        transfer from byte 0 does not hash them again.

        After a break, the rest is offered again up to ``resume_attempts``
        times, each after a growing pause and within ``resume_wait`` of the
        break: an offer of the rest that fails before the receiver takes it
        (no OTR session, a bounce, a session-initiate refused or
        unanswered, an untrusted key where the peer was) uses up one of
        them, as does each later break. The peer is looked for under its
        old full JID and any new one (:mod:`.rejoin`)."""
        source = Path(path)
        started = time.perf_counter()
        # Its size and id, not its hash: that comes in the pass that seals it.
        identified = await identify(source)

        async def offer(
            full: str, otr_session: Session, attempt: _Attempt
        ) -> SendResult:
            fingerprint = otr_session.their_fingerprint
            assert fingerprint is not None
            if not self._trust_ok(full, fingerprint):
                raise UntrustedPeer(full, fingerprint)
            return await self._offer(
                full,
                otr_session,
                fingerprint,
                source,
                identified,
                name,
                media_type,
                progress,
                attempt,
                check_source,
                reader,
                read_sha256,
            )

        drops = self._liveness.drops
        retry = Retry(deadline=0.0)
        got: SendResult | XferError
        try:
            full, otr_session = await self.secure(peer)
        except (PeerOffline, PeerIncapable):
            raise
        except NotSecure as exc:
            if self._liveness.drops == drops:
                raise
            retry.breaks += 1  # our connection dropped during the AKE
            retry.restart(self._settings.resume_wait)
            got, full = exc, peer
        else:
            got = await self._once(full, otr_session, offer, retry)
        while not isinstance(got, SendResult):
            retry.attempts += 1
            if (
                retry.attempts > self._settings.resume_attempts
                or asyncio.get_running_loop().time() >= retry.deadline
            ):
                raise gave_up(got, retry.attempts - 1)
            log.info("transfer to %s: %s; offering the rest again", full, got)
            try:
                full, otr_session = await self._finder.session_again(full, got, retry)
            except XferError as exc:
                got = exc
                log.info("offering the rest to %s failed: %s", full, exc)
            else:
                got = await self._once(full, otr_session, offer, retry)
        return dataclasses.replace(
            got, seconds=time.perf_counter() - started, breaks=retry.breaks
        )

    async def _once(
        self,
        full: str,
        otr_session: Session,
        offer: Callable[[str, Session, _Attempt], Awaitable[SendResult]],
        retry: Retry,
    ) -> SendResult | XferError:
        """One offer (``offer``) to ``full`` over ``otr_session``: its result,
        or why it failed if that is worth offering the rest (a break; on an
        offer of the rest, any failure before the receiver took it).

        Raises:
            XferError: a failure not worth another offer.
        """
        renewed = renew = False
        offered_under = otr_session.ssid
        while True:
            drops = self._liveness.drops
            attempt = _Attempt()
            try:
                if renew:
                    # The receiver restarted and could not read the offer:
                    # a new session; a bounce ends the wait at once, and
                    # a failure is one like any other (below).
                    renew = False
                    otr_session = await self._finder.renewed(full, offered_under)
                # The AKE that made the keys this offer goes out under. (The
                # session object stays the same when the peer re-keys it, so
                # the id must be taken now, not after a refusal.)
                offered_under = otr_session.ssid
                return await offer(full, otr_session, attempt)
            except TransferRejected as exc:
                if RESTARTED in (exc.text or "") and not renewed:
                    renewed = renew = True
                    continue
                if not (attempt.accepted and exc.reason in RESUMABLE):
                    raise
                broken: XferError = exc
            except (TransportError, NotSecure, UntrustedPeer) as exc:
                # Before the receiver took the first offer, only our
                # connection dropping (or the peer's) is worth another.
                lost = (
                    isinstance(exc, ConnectionFailed) or self._liveness.drops != drops
                )
                if not (attempt.accepted or lost or retry.attempts):
                    raise
                if isinstance(exc, UntrustedPeer):
                    # A resource that proved another key where the peer was
                    # (a server may invent one) gets nothing, ever.
                    retry.excluded.add(full)
                    self._siblings.otr.end(full)
                broken = exc
            except RemoteProtocolError as exc:
                # A refused session-initiate (its resource is gone).
                if attempt.accepted or not retry.attempts:
                    raise
                broken = exc
            if attempt.accepted or not retry.attempts:
                retry.breaks += 1  # a break, not a failed offer of the rest
                retry.restart(self._settings.resume_wait)
            elif self._siblings.otr.secured(full) is not None:
                # An offer of the rest that got nowhere over a session that
                # was still up: the resource may be gone (we did not hear),
                # so the next attempt looks for the peer afresh.
                self._siblings.otr.end(full)
            return broken

    async def secure(self, peer: str) -> tuple[str, Session]:
        """The OTR session for a new transfer. Unless one is up, first ask
        where ``peer`` can receive (:mod:`xfer.xmpp.reach`): an offline peer
        or one whose client cannot do xfer is told apart in seconds; a bare
        JID goes to a resource that announces xfer, not to whichever the
        server picks."""
        otr = self._siblings.otr
        timeout = self._settings.connect_timeout
        if otr.secured(peer) is not None:
            return await otr.secure(peer, timeout=timeout)
        found = await self._reach.check(peer)
        if found is None:  # presence cannot tell: OTR's first answer will
            wait = self._settings.probe_wait(peer, self._siblings.jid)
            return await otr.secure(peer, timeout=timeout, answer_within=wait)
        return await otr.secure(found[0], timeout=timeout)

    async def _offer(
        self,
        full: str,
        otr_session: Session,
        fingerprint: bytes,
        source: Path,
        identified: Identified,
        name: str | None,
        media_type: str,
        progress: ProgressCallback,
        attempt: _Attempt,
        check_source: Callable[[], None] | None = None,
        reader: Reader | None = None,
        read_sha256: Callable[[int], bytes] | None = None,
    ) -> SendResult:
        """One offer of the file over ``otr_session`` with ``full``, whose
        ``fingerprint`` the caller checked.

        The sender reports the file delivered only on the receiver's verdict,
        which comes inside OTR from that fingerprint: a Jingle ``success`` is
        not authenticated, and a server could forge it.

        The receiver may answer with ``<range offset/>``: it kept that much
        of the file from an earlier, broken transfer; then only the rest is
        sealed, under this offer's fresh key. ``attempt`` notes when the
        receiver accepted (a break after that is worth resuming) and when
        the last sealed byte went out.

        The file is hashed as it is sealed (a resume first reads the prefix
        the receiver kept), and the digest goes inside OTR to the same
        fingerprint right after the last sealed byte: the receiver stores
        the file only if its SHA-256 agrees.
        """
        offer = TransferOffer(
            transfer_id=os.urandom(16),
            salt=os.urandom(32),
            suite=int(self._settings.suite),
            chunk_size=self._settings.chunk_size,
            size=identified.stat.st_size,
            file_id=identified.file_id,
            name=name or source.name,
            media_type=media_type,
            mtime=max(0, int(identified.stat.st_mtime)),
        )
        verdict = self._siblings.otr.expect_verdict(
            full, offer.transfer_id, fingerprint
        )
        try:
            key = self._siblings.otr.send_offer(
                otr_session, offer, fingerprint=fingerprint
            )
        except BaseException:
            self._siblings.otr.forget_verdict(offer.transfer_id)
            raise
        sealer = Sealer.announced(
            key,
            salt=offer.salt,
            transfer_id=offer.transfer_id,
            suite=self._settings.suite,
            chunk_size=offer.chunk_size,
            executor=crypto_executor(),
            workers=self._settings.workers,
        )
        sealed_size = sealer.header.sealed_size(offer.size)
        session = self._siblings.jingle.initiate(full)
        setup, kind, start, route = 0.0, "", 0, None
        s5b: S5B | None = None
        try:
            transport, s5b = await self._negotiator.local_transport(session)
            # An empty range: we can send the rest of the file (XEP-0234).
            description = FileDescription(
                name=f"{offer.transfer_id.hex()}.xfer", size=sealed_size, range=Range()
            )
            with self._finder.bounce(full) as bounced:
                accept = await unless_bounced(
                    bounced,
                    full,
                    self._initiate(session, offer, description, transport),
                )
            attempt.accepted = True
            start = range_offset(accept, offer.size)
            setup_start = time.perf_counter()
            stream, kind, digest = await self._connect(
                session, transport, s5b, accept, source, start
            )
            setup = time.perf_counter() - setup_start
            route = self._negotiator.route(session)
            # The whole file from a shared read: hashed there, once.
            whole = read_sha256 if reader is not None and start == 0 else None
            await watching(
                session,
                send_sealed(
                    source,
                    stream,
                    sealer,
                    total=offer.size,
                    start=start,
                    progress=progress,
                    on_written=self._then_digest(
                        attempt,
                        digest,
                        offer,
                        (otr_session, full, fingerprint),
                        check_source,
                        whole,
                    ),
                    stall_timeout=self._settings.stall_timeout,
                    digest=digest if whole is None else None,
                    pieces=None if reader is None else reader(start),
                ),
                stream,
            )
            # The receiver verifies, stores, then ends the session with its verdict.
            await expect(session, set(), self._settings.offer_timeout)
        except TransferRejected as exc:
            # "success" counts only once the whole sealed stream went out,
            # and only with the receiver's verdict inside OTR.
            if exc.reason == Reason.SUCCESS.value and attempt.written:
                await self._verified(verdict, full, offer, attempt.sha256)
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
                    sha256=attempt.sha256,
                    via=route.via if route else "",
                    after_failure=route.after_failure if route else None,
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
            self._siblings.otr.forget_verdict(offer.transfer_id)
            self._siblings.jingle.forget(session)
            if s5b is not None:
                s5b.close()
        raise RemoteProtocolError(
            "the receiver never ended the session"
        )  # pragma: no cover

    async def _initiate(
        self,
        session: JingleSessionIO,
        offer: TransferOffer,
        description: FileDescription,
        transport: S5BTransport | IBBTransport,
    ) -> Jingle:
        """Send the session-initiate and wait for the receiver's accept."""
        await session.send(
            initiate(session, self._siblings.jid, offer, description, transport),
            timeout=self._settings.connect_timeout,
        )
        return await expect(
            session, {Action.SESSION_ACCEPT}, self._settings.offer_timeout
        )

    async def _connect(
        self,
        session: JingleSessionIO,
        transport: S5BTransport | IBBTransport,
        s5b: S5B | None,
        accept: Jingle,
        source: Path,
        start: int,
    ) -> tuple[ByteStream, str, hashlib._Hash]:
        """The bytestream the receiver's answer leads to, and its kind; and,
        read meanwhile, the SHA-256 context of the prefix it kept (nothing
        unless resuming from ``start``)."""
        prefix = asyncio.ensure_future(sha256_prefix(source, start))
        try:
            stream, kind = await self._negotiator.negotiate(
                session, transport, s5b, accept
            )
            try:
                return stream, kind, await prefix
            except BaseException:
                stream.abort("the sender could not read the file")
                raise
        finally:
            await settle(prefix)

    def _then_digest(
        self,
        attempt: _Attempt,
        digest: hashlib._Hash,
        offer: TransferOffer,
        to: tuple[Session, str, bytes],
        check_source: Callable[[], None] | None = None,
        whole: Callable[[int], bytes] | None = None,
    ) -> Callable[[], None]:
        """What runs once the last sealed byte is out: the digest of the
        whole file, which ``digest`` has seen by then, follows it inside
        OTR to the fingerprint of the offer (``to``: its session, the peer's
        full JID, the fingerprint). ``check_source``, if given, runs
        first: it raises if the file changed while it was read (a mix of
        old and new bytes would verify), and then no digest goes out and
        the receiver keeps nothing. ``whole(size)``, if given, is that
        digest instead (the bytes were hashed where they were read).

        Raises (when called):
            NotSecure: no session with that fingerprint is left.
        """
        otr_session, full, fingerprint = to

        def written() -> None:
            if check_source is not None:
                check_source()
            attempt.written = True
            attempt.sha256 = digest.digest() if whole is None else whole(offer.size)
            self._siblings.otr.send_digest(
                otr_session,
                TransferDigest(
                    transfer_id=offer.transfer_id,
                    sha256=attempt.sha256,
                    size=offer.size,
                ),
                peer=full,
                fingerprint=fingerprint,
            )

        return written

    async def _verified(
        self,
        verdict: asyncio.Future[TransferVerdict],
        full: str,
        offer: TransferOffer,
        sha256: bytes,
    ) -> None:
        """Wait for the receiver's verdict after its Jingle ``success``: it
        must have stored the file we hashed (``sha256``) at its size.

        Raises:
            RemoteProtocolError: no verdict in time (the ``success`` may
            have been forged), or one that does not match the file.
            TransferRejected: the receiver refused the file after all.
        """
        try:
            got = await asyncio.wait_for(
                asyncio.shield(verdict), self._settings.connect_timeout
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
        if got.sha256 != sha256 or got.size != offer.size:
            raise RemoteProtocolError(f"{full} stored a file that is not the one sent")


def initiate(
    session: JingleSessionIO,
    initiator: str,
    offer: TransferOffer,
    description: FileDescription,
    transport: S5BTransport | IBBTransport,
) -> Jingle:
    """The session-initiate of an encrypted transfer (a file's or a
    stream's): one content, its file description, our transport offer and
    the ``<encrypted/>`` element naming the OTR offer (spec/jingle.md 3)."""
    return session.jingle(
        Action.SESSION_INITIATE,
        initiator=initiator,
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


def _refusal(verdict: asyncio.Future[TransferVerdict]) -> str | None:
    """The receiver's reason, if its verdict came and refused the file."""
    if verdict.done() and not verdict.cancelled():
        got = verdict.result()
        if not got.stored:
            return got.reason
    return None
