"""The receiver: incoming offers, their vetting, receipts and the receive loop.

An offer is vetted (one file, end-to-end encrypted, a matching offer inside
OTR from a trusted fingerprint, within the size limit and the queue's
quotas) before the application sees it as an :class:`IncomingOffer`. A
receipt that breaks off keeps its verified prefix and goes on with the
sender's next offer of the same file; one that finished lately confirms
such an offer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from xfer.aio import partial as _partial
from xfer.aio.bytestream import no_progress
from xfer.aio.placement import bare, find_partial, place
from xfer.errors import (
    DestinationExists,
    LocalProtocolError,
    TransferRejected,
    TransportError,
    XferError,
)
from xfer.jingle import Reason
from xfer.notices import VIA_JINGLE, RefusedOffer
from xfer.transfer.offer import envelope_header
from xfer.transfer.policy import ENCRYPTED_ONLY, broke_off
from xfer.xmpp.transfer.context import RESTARTED
from xfer.xmpp.transfer.receipt import Negotiated, Receipts
from xfer.xmpp.transfer.streaming import ReceivedStream

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from xfer.aio.bytestream import ProgressCallback
    from xfer.aio.partial import Partial
    from xfer.envelope import EnvelopeHeader
    from xfer.jingle.wire import Jingle
    from xfer.transfer.offer import TransferOffer
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.otr import ReceivedOffer
    from xfer.xmpp.transfer.candidates import Route
    from xfer.xmpp.transfer.context import Context
    from xfer.xmpp.transfer.negotiation import Negotiator

log = logging.getLogger(__name__)

#: Finished receipts remembered for a sender that offers one again.
MAX_FINISHED = 64


@dataclass(kw_only=True)
class IncomingOffer:
    """A file offered to us, verified as far as it can be before accepting.

    ``name``, ``size``, ``file_id``, ``media_type`` and ``mtime`` came inside
    OTR (the servers never saw them); ``name`` is the sender's, unsanitised:
    :meth:`accept` to a directory makes it safe. ``sha256`` is known up
    front only from older senders (a version 1 offer); otherwise once the
    file is stored: then it is the SHA-256 the sender computed as it sealed
    the file, which the stored file matched.
    """

    peer: str
    fingerprint: bytes
    trusted: bool
    offer: TransferOffer
    #: The size of the sealed stream; None for a stream (not known up front).
    sealed_size: int | None
    _receiver: Receiver = field(repr=False)
    _negotiated: Negotiated = field(repr=False)
    _answered: bool = field(default=False, repr=False)
    _stored_sha256: bytes | None = field(default=None, repr=False)
    _route: Route | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.offer.name

    @property
    def size(self) -> int:
        """The file's size in bytes (0 for a stream: see :attr:`is_stream`)."""
        return self.offer.size

    @property
    def is_stream(self) -> bool:
        """Whether this offers a stream (a pipe, say), whose size is known
        only at its end: take it with :meth:`accept_stream`, not
        :meth:`accept`."""
        return self.offer.is_stream

    @property
    def sha256(self) -> bytes | None:
        """The SHA-256 of the file: of the stored file once :meth:`accept`
        returned; before, only a version 1 offer's (None otherwise)."""
        if self._stored_sha256 is not None:
            return self._stored_sha256
        return self.offer.sha256

    @property
    def route(self) -> Route | None:
        """The path the data took (its last part, after a break), once
        :meth:`accept` returned; None before."""
        return self._route

    @property
    def file_id(self) -> bytes:
        """What names this file to find an earlier, unfinished receipt of it
        (the sender's file id; a version 1 offer's SHA-256)."""
        return self.offer.identity

    @property
    def media_type(self) -> str:
        return self.offer.media_type

    @property
    def mtime(self) -> int:
        return self.offer.mtime

    @property
    def transfer_id(self) -> bytes:
        return self.offer.transfer_id

    @property
    def withdrawn(self) -> bool:
        """Whether the sender ended the offer before it was answered."""
        return self._negotiated.session.ended

    def _claim(self) -> None:
        if self._answered:
            raise LocalProtocolError("this offer was already answered")
        self._answered = True

    async def decline(self, text: str | None = None) -> None:
        """Say no: the sender gets ``decline``."""
        self._claim()
        await self._negotiated.session.terminate(Reason.DECLINE, text)

    async def accept(
        self,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: ProgressCallback = no_progress,
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
        if self.is_stream:
            raise LocalProtocolError("this offers a stream: use accept_stream()")
        self._claim()
        path, partial = await asyncio.to_thread(
            self._receiver.place, self, Path(dest), overwrite
        )
        if path is None:
            await self._negotiated.session.terminate(
                Reason.DECLINE, "destination exists"
            )
            raise DestinationExists(dest)
        return await self._receiver.receive(self, path, overwrite, progress, partial)

    async def accept_stream(
        self, *, progress: ProgressCallback = no_progress
    ) -> ReceivedStream:
        """Take a stream (:attr:`is_stream`): an async iterator of its
        plaintext, each piece released only once its chunk verified. It
        ends when the final chunk verified and the sender's digest agreed
        with what was delivered; then ``sha256`` and ``verified`` say what
        that was, and the sender has been told (verdict inside OTR).

        Iterating raises :class:`~xfer.errors.StreamCut` ("stream cut after
        N verified bytes") if the stream broke off or did not verify;
        everything yielded before was verified, but the stream is
        incomplete. Leaving the iteration early (``aclose``) ends the
        transfer (the sender hears ``cancel``).

        Raises:
            LocalProtocolError: this offers a file (use :meth:`accept`), or
            it was answered already.
        """
        if not self.is_stream:
            raise LocalProtocolError("this offers a file: use accept()")
        self._claim()
        return ReceivedStream(
            self._receiver.receipts_runner, self._negotiated, progress=progress
        )

    def resumes_from(self, dest: str | os.PathLike[str]) -> int:
        """How many bytes of this file an earlier, broken receipt into
        ``dest`` kept (0 if none): :meth:`accept` to the same place goes on
        from there. Blocking (it looks at the directory)."""
        found = find_partial(self, Path(dest))
        return found.state.verified if found is not None else 0


class Receiver:
    """Vets the offers made to us, queues them for the application, and
    receives the accepted ones (going on after a break)."""

    def __init__(self, context: Context, negotiator: Negotiator) -> None:
        self._settings = context.settings
        self._siblings = context.siblings
        self._trust_ok = context.trust_ok
        self._notice = context.notice
        self._receipts = Receipts(context.settings, context.siblings, negotiator)
        self._negotiator = negotiator
        #: Runs the Jingle session of a receipt (a stream's, too).
        self.receipts_runner = self._receipts
        #: The vetted offers waiting for the application.
        self.offers: asyncio.Queue[IncomingOffer] = asyncio.Queue(
            maxsize=self._settings.max_pending_offers
        )
        self._tasks: set[asyncio.Future[None]] = set()
        #: Called with each vetted offer before it is queued; one that
        #: returns True took it (``xfer_share``'s fetcher takes the offers
        #: that answer its own requests).
        self.takers: list[Callable[[IncomingOffer], bool]] = []
        #: Receipts in progress, by :func:`_receipt_key`: a new offer of the
        #: same file from the same sender continues one.
        self.receipts: dict[tuple[str, bytes, int, str], _Receipt] = {}
        #: Receipts finished lately, by the same key: the sender may not have
        #: heard of the end (its connection dropped) and offer the rest again.
        self._finished: dict[tuple[str, bytes, int, str], _Finished] = {}

    def on_initiate(self, session: JingleSessionIO, jingle: Jingle) -> None:
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
        got = await self._siblings.otr.claim_offer(
            session.peer,
            content.encrypted.transfer_id,
            timeout=self._settings.otr_offer_wait,
        )
        if got is None:
            text = "no matching offer inside OTR"
            if self._siblings.otr.refused_offer(content.encrypted.transfer_id):
                text = "fingerprint not trusted"
            elif self._siblings.otr.lost_offers(session.peer):
                text += f"; {RESTARTED}"
            await session.terminate(Reason.SECURITY_ERROR, text)
            return
        try:
            header = envelope_header(got.offer)
        except XferError:  # an unknown suite or a chunk size out of range
            await session.terminate(
                Reason.SECURITY_ERROR, "the OTR offer names unusable parameters"
            )
            return
        # A stream has no size up front, in Jingle either (spec/jingle.md 3.2).
        sealed = None if got.offer.is_stream else header.sealed_size(got.offer.size)
        if content.description.size != sealed or (
            sealed is None and content.description.range is not None
        ):
            await session.terminate(
                Reason.SECURITY_ERROR, "the Jingle size does not match the OTR offer"
            )
            return
        if not self._trust_ok(got.peer, got.fingerprint):
            await session.terminate(Reason.SECURITY_ERROR, "fingerprint not trusted")
            return
        limit = self._settings.max_size
        if limit is not None and got.offer.size > limit:
            await session.terminate(Reason.MEDIA_ERROR, "the file is too large")
            return
        incoming = self._incoming(session, jingle, got, header, sealed)
        # Only now, the offer vetted, may the peer learn that we are online
        # and when we go (directed presence).
        self._siblings.jingle.announce(session.peer)
        if not incoming.is_stream and (
            self._continues(incoming)
            or self._confirms(incoming)
            or any(take(incoming) for take in self.takers)
        ):
            return
        if self.offers.full() or not incoming.trusted:
            self._drop_withdrawn()
        if not incoming.trusted and (
            sum(1 for o in self.queued() if not o.trusted)
            >= self._settings.max_untrusted_offers
        ):
            # Untrusted senders (accept_untrusted) share a small part of the
            # queue: throw-away accounts cannot crowd out trusted offers.
            await session.terminate(Reason.BUSY, "too many offers waiting")
            return
        try:
            self.offers.put_nowait(incoming)
        except asyncio.QueueFull:
            await session.terminate(Reason.BUSY, "too many offers waiting")
            return
        self._siblings.event("xfer_offer", incoming)

    def queued(self) -> list[IncomingOffer]:
        """The offers waiting for the application, in order."""
        waiting = []
        while not self.offers.empty():
            waiting.append(self.offers.get_nowait())
        for offer in waiting:
            self.offers.put_nowait(offer)
        return waiting

    def _drop_withdrawn(self) -> None:
        """Forget queued offers whose sender gave up, to make room."""
        waiting = []
        while not self.offers.empty():
            waiting.append(self.offers.get_nowait())
        for offer in waiting:
            if not offer.withdrawn:
                self.offers.put_nowait(offer)

    def _refusal(
        self, session: JingleSessionIO, jingle: Jingle
    ) -> tuple[Reason, str | None] | None:
        """Why an offer is refused before looking inside OTR, if it is (an
        unencrypted one is also reported to the application)."""
        if (
            self._siblings.jingle.offered_by(bare(session.peer))
            > self._settings.max_per_peer
        ):
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
            self._refused_plain(session, jingle)
            return Reason.SECURITY_ERROR, ENCRYPTED_ONLY
        return None

    def _refused_plain(self, session: JingleSessionIO, jingle: Jingle) -> None:
        """Tell the application who offered which file unencrypted (a plain
        XEP-0234 offer): its name and size are the description's, which the
        wire parser bounds (``spec/jingle.md`` 8)."""
        content = jingle.content
        assert content is not None
        assert content.description is not None
        self._notice(
            RefusedOffer(
                peer=session.peer,
                name=content.description.name,
                size=content.description.size,
                via=VIA_JINGLE,
                reason=ENCRYPTED_ONLY,
            )
        )

    def _continues(self, incoming: IncomingOffer) -> bool:
        """Hand an offer of a file we are receiving (or waiting to go on
        with) from the same sender to that receipt, instead of the queue."""
        receipt = self.receipts.get(_receipt_key(incoming))
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
        content = incoming._negotiated.initiate.content
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
            await self._receipts.run(
                incoming._negotiated, path, False, no_progress, None, finished=True
            )
            log.info("confirmed %s to %s again", path.name, incoming.peer)

    def _incoming(
        self,
        session: JingleSessionIO,
        jingle: Jingle,
        got: ReceivedOffer,
        header: EnvelopeHeader,
        sealed: int | None,
    ) -> IncomingOffer:
        return IncomingOffer(
            peer=got.peer,
            fingerprint=got.fingerprint,
            trusted=self._siblings.trust.is_trusted(got.peer, got.fingerprint),
            offer=got.offer,
            sealed_size=sealed,
            _receiver=self,
            _negotiated=Negotiated(
                session=session, initiate=jingle, key=got.key, header=header, got=got
            ),
        )

    def place(
        self, incoming: IncomingOffer, dest: Path, overwrite: bool
    ) -> tuple[Path | None, Partial | None]:
        """Where ``incoming`` goes in ``dest`` (:func:`xfer.aio.placement.place`)."""
        return place(incoming, dest, overwrite, self._settings.partial_max_age)

    async def receive(
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
                peer=bare(incoming.peer),
                fingerprint=incoming.fingerprint,
                file_id=incoming.file_id,
                size=incoming.size,
            )
        accepted = incoming
        key = _receipt_key(incoming)
        loop = asyncio.get_running_loop()
        receipt = _Receipt(fingerprint=incoming.fingerprint, next=loop.create_future())
        self.receipts.setdefault(key, receipt)
        breaks = 0
        done = False
        try:
            while True:
                receipt.task = asyncio.ensure_future(
                    self._receipts.run(
                        incoming._negotiated,
                        path,
                        overwrite,
                        progress,
                        partial,
                        on_stored=receipt.mark_stored,
                    )
                )
                try:
                    sha256 = await receipt.task
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not receipt.next.done() or (task and task.cancelling()):
                        raise
                    # The sender offered the rest while our stream still hung
                    # (or just as the file went into place: confirm that offer).
                    if receipt.stored:
                        await self._confirm(receipt.next.result(), path)
                except (TransportError, TransferRejected) as exc:
                    # Stored already, the sender hears of it when it offers again.
                    if not receipt.stored:
                        breaks += 1
                        await self._await_rest(receipt, incoming, exc, breaks)
                else:
                    receipt.mark_stored(sha256)  # it finished: the file is in place
                route = self._negotiator.route(incoming._negotiated.session)
                accepted._route = route or accepted._route
                if receipt.stored:
                    done = True
                    accepted._stored_sha256 = receipt.sha256
                    return self._remember(key, incoming, path)
                incoming = receipt.next.result()
                receipt.next = loop.create_future()
        finally:
            if self.receipts.get(key) is receipt:
                del self.receipts[key]
            if not done and not self._settings.keep_partial:
                await asyncio.to_thread(partial.remove)

    async def _await_rest(
        self, receipt: _Receipt, incoming: IncomingOffer, exc: XferError, breaks: int
    ) -> None:
        """After a break, wait for the sender's offer of the rest; raise
        ``exc`` if it was not a break, or no such offer comes in time."""
        if not broke_off(exc) or breaks > self._settings.resume_attempts:
            raise exc
        log.info("receipt from %s broke off (%s)", incoming.peer, exc)
        try:
            await asyncio.wait_for(
                asyncio.shield(receipt.next), self._settings.resume_wait
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
            expires=time.monotonic() + self._settings.resume_wait,
        )
        while len(self._finished) > MAX_FINISHED:
            del self._finished[next(iter(self._finished))]
        return path


@dataclass(kw_only=True)
class _Receipt:
    """A receipt in progress, waiting for the sender's offers of the rest."""

    fingerprint: bytes
    next: asyncio.Future[IncomingOffer]
    task: asyncio.Future[bytes] | None = None
    #: Set once the verified file is in place, with its SHA-256 (unless it
    #: went into place as its session was cancelled and a later offer of
    #: it was confirmed).
    stored: bool = False
    sha256: bytes | None = None

    def mark_stored(self, sha256: bytes | None = None) -> None:
        self.stored = True
        if sha256 is not None:
            self.sha256 = sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class _Finished:
    """A receipt that finished lately (see ``Receiver._confirms``)."""

    fingerprint: bytes
    path: Path
    expires: float


def _receipt_key(offer: IncomingOffer) -> tuple[str, bytes, int, str]:
    """The same file from the same account: a new offer of it goes on with
    (or confirms) the receipt. The name counts: one content sent under two
    names is two files. (The file id only finds the receipt: the whole
    file's SHA-256 decides whether it is stored.)"""
    return bare(offer.peer), offer.file_id, offer.size, offer.name
