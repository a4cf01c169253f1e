"""One Jingle session of a receipt: accept the offer with our transport,
take the sealed stream into place (or, for a file stored already, check the
empty rest) once the sender's digest inside OTR agrees, and tell the sender
the verdict inside OTR.

It works on a :class:`Negotiated` offer, the record an ``IncomingOffer``
keeps of what was negotiated; the receive loop (:mod:`.receiving`) decides
when a receipt goes on with the next offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.aio.placement import resume_point
from xfer.aio.pump import confirm_sealed, receive_sealed
from xfer.aio.stream import receive_stream
from xfer.errors import (
    IntegrityError,
    NotSecure,
    NoUsableTransport,
    TransferRejected,
    XferError,
)
from xfer.jingle import Action, Reason
from xfer.jingle.files import Range, Received
from xfer.jingle.wire import (
    NS_FILE_TRANSFER,
    Content,
    IBBTransport,
    S5BTransport,
)
from xfer.transfer.offer import MAX_REASON_BYTES, TransferVerdict
from xfer.transfer.policy import (
    broke_off,
    clip,
    private_text,
    public_text,
    reason_for,
)
from xfer.xmpp.jingle import rejection
from xfer.xmpp.transfer.context import crypto_executor
from xfer.xmpp.transfer.negotiation import S5B, watching

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from xfer.aio.bytestream import ByteStream, ProgressCallback
    from xfer.aio.partial import Partial
    from xfer.aio.stream import Sink, StreamProgress
    from xfer.envelope import EnvelopeHeader
    from xfer.jingle.files import FileDescription
    from xfer.jingle.wire import Jingle
    from xfer.transfer.offer import TransferDigest
    from xfer.xmpp.ibb import IBBStream
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.otr import ReceivedOffer
    from xfer.xmpp.transfer.candidates import Route
    from xfer.xmpp.transfer.context import Settings, Siblings
    from xfer.xmpp.transfer.negotiation import Negotiator

    #: Waits for the sender's digest inside OTR.
    DigestWait = Callable[[], Awaitable[TransferDigest]]

__all__ = ["Negotiated", "Receipts"]

log = logging.getLogger(__name__)

#: How long a failed stream's receipt waits for the answer to its
#: session-terminate before it reports the cut (the rest goes on behind).
TERMINATE_WAIT = 0.5
#: Those session-terminates still waiting for their answer.
_ENDING: set[asyncio.Future[None]] = set()


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    """What was negotiated for one offer: its Jingle session and the
    ``session-initiate``, the key and envelope header of the sealed stream,
    and the offer that came inside OTR (the verdict goes back over it)."""

    session: JingleSessionIO
    initiate: Jingle
    key: bytes
    header: EnvelopeHeader
    got: ReceivedOffer


class Receipts:
    """Runs the Jingle sessions of receipts, one :meth:`run` each."""

    def __init__(
        self, settings: Settings, siblings: Siblings, negotiator: Negotiator
    ) -> None:
        self._settings = settings
        self._siblings = siblings
        self._negotiator = negotiator

    def route(self, offer: Negotiated) -> Route | None:
        """The path the data of ``offer`` took (None before it was set up)."""
        return self._negotiator.route(offer.session)

    async def run(
        self,
        offer: Negotiated,
        path: Path,
        overwrite: bool,
        progress: ProgressCallback,
        partial: Partial | None,
        *,
        finished: bool = False,
        on_stored: Callable[[bytes], object] | None = None,
    ) -> bytes:
        """One Jingle session of a receipt (the first, or one that goes on),
        or, when ``finished``, of one already stored at ``path``: then the
        rest asked for is empty (``Receiver._confirms``). Returns the SHA-256
        of the file in place.

        The file of a version 2 offer goes into place only once the sender's
        digest came inside OTR, from the account and fingerprint of the
        offer, and agrees (waited for up to ``connect_timeout`` after the
        stream ended); without it, the file is refused."""
        content = offer.initiate.content
        assert content is not None
        assert content.description is not None
        if finished:
            start = offer.got.offer.size
        else:
            assert partial is not None
            start = await resume_point(partial, content.description.range)
        description = dataclasses.replace(
            content.description, range=Range(offset=start) if start else None
        )

        def phase(stream: ByteStream, said: DigestWait | None) -> Awaitable[bytes]:
            if finished:
                return confirm_sealed(
                    stream,
                    offer.key,
                    offer.got.offer,
                    path,
                    sealed_size=offer.header.sealed_size(0),
                    stall_timeout=self._settings.stall_timeout,
                    digest=said,
                )
            return self._receive(
                offer, stream, path, overwrite, progress, partial, on_stored, said
            )

        sha256 = await self._exchange(offer, description, phase)
        await self._succeeded(offer, sha256, offer.got.offer.size)
        return sha256

    async def run_stream(
        self,
        offer: Negotiated,
        sink: Sink,
        state: StreamProgress,
        progress: ProgressCallback,
    ) -> bytes:
        """The Jingle session of a stream (``spec/otr.md`` 5.4): accept
        without a range, hand each verified chunk's plaintext to ``sink``,
        and once the final chunk verified and the sender's digest agrees,
        tell the sender (verdict ``stored`` with the SHA-256 and size of
        what was delivered). Returns that SHA-256; ``state`` counts what was
        delivered, also after a failure (then the verdict ``refused`` says
        how much).

        Raises:
            StreamCut: the stream ended or broke before its final chunk.
            IntegrityError, EnvelopeFormatError: it did not verify.
            TransferRejected: the sender ended the session. OSError: the
            sink failed.
        """
        content = offer.initiate.content
        assert content is not None
        assert content.description is not None
        description = dataclasses.replace(content.description, range=None)

        def phase(stream: ByteStream, said: DigestWait | None) -> Awaitable[bytes]:
            assert said is not None  # a stream's offer is version 2
            return receive_stream(
                stream,
                offer.key,
                offer.got.offer,
                sink,
                state=state,
                digest=said,
                progress=progress,
                executor=crypto_executor(),
                limit=self._settings.max_size,
            )

        sha256 = await self._exchange(offer, description, phase, state=state)
        await self._succeeded(offer, sha256, state.plain)
        return sha256

    async def _exchange(
        self,
        offer: Negotiated,
        description: FileDescription,
        phase: Callable[[ByteStream, DigestWait | None], Awaitable[bytes]],
        *,
        state: StreamProgress | None = None,
    ) -> bytes:
        """Accept ``offer`` with ``description``, negotiate the transport,
        and run the data ``phase`` on the bytestream; the SHA-256 it
        returns. On failure the sender hears why (:meth:`_failed`; for a
        stream, with the count ``state`` holds)."""
        session = offer.session
        content = offer.initiate.content
        assert content is not None
        assert content.transport is not None
        s5b: S5B | None = None
        waiter: asyncio.Future[IBBStream] | None = None
        tid = offer.got.offer.transfer_id
        # Waited for before we accept: the sender sends it after the data.
        digest = (
            self._siblings.otr.expect_digest(offer.got.peer, tid, offer.got.fingerprint)
            if offer.got.offer.sha256 is None
            else None
        )
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
                if not self._settings.ibb:
                    raise NoUsableTransport("the sender offers only IBB, which is off")
                theirs = content.transport
                ours: S5BTransport | IBBTransport = IBBTransport(
                    sid=theirs.sid,
                    block_size=self._negotiator.ibb_block(theirs),
                )
                waiter = self._siblings.ibb.expect(session.peer, theirs.sid)
            else:
                ours, s5b = await self._negotiator.local_transport(
                    session, sid=content.transport.sid
                )
            await session.send(
                session.jingle(
                    Action.SESSION_ACCEPT,
                    responder=self._siblings.jid,
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
                    offer.initiate,
                )
            said = None if digest is None else self._waiting(offer, digest)
            return await watching(session, phase(stream, said), stream, drain=True)
        except BaseException as exc:
            await self._failed(offer, exc, state)
            raise
        finally:
            self._siblings.otr.forget_digest(tid)
            self._siblings.jingle.forget(session)
            if s5b is not None:
                s5b.close()
            if waiter is not None and not waiter.done():
                waiter.cancel()

    async def _succeeded(self, offer: Negotiated, sha256: bytes, size: int) -> None:
        """The verdict the sender believes goes inside OTR; Jingle's end
        follows."""
        session = offer.session
        content = offer.initiate.content
        assert content is not None
        self._tell(offer, stored=True, sha256=sha256, size=size)
        with contextlib.suppress(XferError):
            await session.send(
                session.jingle(Action.SESSION_INFO, info=Received(content=content.name))
            )
        await session.terminate(Reason.SUCCESS)

    async def _receive(
        self,
        offer: Negotiated,
        stream: ByteStream,
        path: Path,
        overwrite: bool,
        progress: ProgressCallback,
        partial: Partial | None,
        on_stored: Callable[[bytes], object] | None,
        digest: Callable[[], Awaitable[TransferDigest]] | None,
    ) -> bytes:
        """The data phase: the rest of the file after what ``partial`` kept."""
        assert partial is not None
        rest = offer.got.offer.size - partial.state.verified
        return await receive_sealed(
            stream,
            offer.key,
            offer.got.offer,
            path,
            sealed_size=offer.header.sealed_size(rest),
            overwrite=overwrite,
            progress=progress,
            executor=crypto_executor(),
            partial=partial,
            keep=self._keep,
            stall_timeout=self._settings.stall_timeout,
            on_stored=on_stored,
            digest=digest,
        )

    def _waiting(
        self, offer: Negotiated, digest: asyncio.Future[TransferDigest]
    ) -> Callable[[], Awaitable[TransferDigest]]:
        """What waits for the sender's digest once the data verified: up to
        ``connect_timeout`` (the sender sends it right after the last byte;
        a server that drops it only makes the transfer fail)."""

        async def wait() -> TransferDigest:
            try:
                return await asyncio.wait_for(
                    asyncio.shield(digest), self._settings.connect_timeout
                )
            except TimeoutError:
                log.warning(
                    "no digest of the file from %s inside OTR: not stored",
                    offer.got.peer,
                )
                raise IntegrityError from None

        return wait

    async def _failed(
        self, offer: Negotiated, exc: BaseException, state: StreamProgress | None
    ) -> None:
        """A receipt failed: say why to the sender inside OTR (unless it only
        broke off, to go on), and end the Jingle session with a reason the
        servers may read. A stream never goes on: its sender always hears
        why, and how much was verified and delivered (``state``)."""
        if state is not None:
            # Also when we were stopped (Ctrl-C): the count is the news.
            self._tell(
                offer,
                stored=False,
                why=(
                    private_text(exc)
                    if isinstance(exc, XferError | OSError)
                    else "the receiver stopped"
                ),
                sha256=state.digest.digest(),
                size=state.plain,
            )
        elif isinstance(exc, XferError | OSError) and not broke_off(exc):
            self._tell(offer, stored=False, why=private_text(exc))
        ending = offer.session.terminate(
            reason_for(exc), public_text(exc, receiving=True)
        )
        if state is None:
            await ending
            return
        # A stream's consumer hears of the cut at once, not only when the
        # server answered (a peer that was killed answers nothing for a while).
        task = asyncio.ensure_future(ending)
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)
        await asyncio.wait({task}, timeout=TERMINATE_WAIT)

    def _tell(
        self,
        offer: Negotiated,
        *,
        stored: bool,
        sha256: bytes = bytes(32),
        size: int = 0,
        why: str = "",
    ) -> None:
        """Send the sender our verdict on its offer, inside OTR: for a file
        stored, its SHA-256 and size; for a stream, those of the plaintext
        verified and delivered (also when refused)."""
        verdict = TransferVerdict(
            transfer_id=offer.got.offer.transfer_id,
            stored=stored,
            sha256=sha256,
            size=size,
            reason=clip(why, MAX_REASON_BYTES),
        )
        try:
            self._siblings.otr.send_verdict(offer.got, verdict)
        except NotSecure as exc:
            log.warning("could not tell %s the verdict: %s", offer.got.peer, exc)

    def _keep(self, exc: BaseException | None) -> bool:
        """Whether a receipt that ended with ``exc`` keeps its verified prefix:
        when it broke off (to go on in a moment), or was stopped on either
        side and may be offered again (``keep_partial``); never when the
        data was not authentic."""
        if broke_off(exc) or isinstance(exc, asyncio.CancelledError):
            # (A cancelled receipt is either going on with a new offer, or
            # ends here: then the receive loop removes what keep_partial does not keep.)
            return True
        stopped = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, TransferRejected) and exc.reason == Reason.CANCEL.value
        )
        return stopped and self._settings.keep_partial
