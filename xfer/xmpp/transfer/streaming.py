"""Streams: data whose size is known only at its end (``spec/otr.md`` 5.4).

The sender offers a stream inside OTR (the offer's stream flag: no size, no
file id) and in Jingle (a ``<file/>`` without ``<size/>``), seals its source
as it reads it, and after the last byte sends the digest (the SHA-256 and
size of all it read). The receiver hands each chunk's plaintext on as soon
as the chunk verified, and at the end answers with its verdict: the SHA-256
and size of what it delivered, which the sender compares with its own. A
stream that breaks off is not offered again (its source cannot be read
again): both sides end with :class:`~xfer.errors.StreamCut`, the receiver
with the exact count of verified bytes it delivered, which its verdict
also tells the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, TypeVar

from xfer.aio.bytestream import no_progress
from xfer.aio.stream import StreamProgress, send_stream, stream_sealer
from xfer.errors import (
    RemoteProtocolError,
    StreamCut,
    TransferRejected,
    UntrustedPeer,
    XferError,
)
from xfer.jingle import Action, Reason
from xfer.jingle.files import FileDescription
from xfer.transfer.offer import TransferDigest, TransferOffer
from xfer.transfer.policy import public_text, range_offset, reason_for
from xfer.xmpp.transfer.context import crypto_executor
from xfer.xmpp.transfer.negotiation import expect, settle, watching
from xfer.xmpp.transfer.sending import SendResult, initiate

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable

    from xfer.aio.bytestream import ProgressCallback
    from xfer.aio.stream import Sink
    from xfer.jingle.wire import Jingle
    from xfer.otr.session import Session
    from xfer.transfer.offer import TransferVerdict
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.transfer.candidates import Route
    from xfer.xmpp.transfer.context import Context
    from xfer.xmpp.transfer.negotiation import S5B, Negotiator
    from xfer.xmpp.transfer.receipt import Negotiated, Receipts
    from xfer.xmpp.transfer.sending import Sender

    #: What a stream is read from.
    Source = AsyncIterable[bytes | bytearray | memoryview] | asyncio.StreamReader

__all__ = ["ReceivedStream", "StreamSender"]

#: Verified pieces handed on but not yet taken by the application, at most.
QUEUED = 4
#: How long a side that cancels a stream waits for the peer to acknowledge
#: its session-terminate before it tears the bytestream down (s).
CANCEL_WAIT = 3.0

_T = TypeVar("_T")


class ReceivedStream:
    """A stream being received (``IncomingOffer.accept_stream``): an async
    iterator of verified plaintext.

    ``verified`` counts the bytes it yielded; ``sha256`` is set once the
    stream ended and the sender's digest agreed (None before). Iterating
    raises :class:`~xfer.errors.StreamCut` with that count if the stream did
    not end well.
    """

    def __init__(
        self,
        receipts: Receipts,
        negotiated: Negotiated,
        *,
        progress: ProgressCallback = no_progress,
    ) -> None:
        self.peer = negotiated.got.peer
        self.name = negotiated.got.offer.name
        self.verified = 0
        self.sha256: bytes | None = None
        self._state = StreamProgress()
        self._receipts, self._negotiated = receipts, negotiated
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUED)
        self._ended = False
        self._task = asyncio.ensure_future(self._run(receipts, negotiated, progress))

    async def _run(
        self, receipts: Receipts, negotiated: Negotiated, progress: ProgressCallback
    ) -> None:
        try:
            self.sha256 = await receipts.run_stream(
                negotiated, self._queue.put, self._state, progress
            )
        except Exception as exc:  # the iteration raises it
            await self._queue.put(exc)
        else:
            await self._queue.put(None)

    @property
    def route(self) -> Route | None:
        """The path the data takes, once its bytestream is set up (None
        before)."""
        return self._receipts.route(self._negotiated)

    def __aiter__(self) -> ReceivedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._ended = True
            await self._task
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._ended = True
            if isinstance(item, StreamCut):
                why = item.why
            elif (
                isinstance(item, TransferRejected)
                and item.reason == Reason.CANCEL.value
            ):
                why = f"{self.peer} cancelled the stream"
            else:
                why = _why(item)
            raise StreamCut(self.verified, why=why) from item
        self.verified += len(item)
        return item

    async def write_to(self, sink: Sink) -> bytes:
        """Hand every verified piece to ``sink`` (awaited before the next is
        taken: backpressure); the SHA-256 of the whole stream once it ended
        and verified.

        Raises:
            StreamCut: as iterating does. OSError: the sink failed (the
            transfer is ended).
        """
        try:
            async for piece in self:
                await sink(piece)
        except BaseException:
            await self.aclose()
            raise
        assert self.sha256 is not None
        return self.sha256

    async def aclose(self) -> None:
        """Stop receiving, unless it ended: the sender hears ``cancel``, and
        inside OTR how much was verified and delivered (the verdict, which
        a sender whose bytestream broke waits for a moment)."""
        self._ended = True
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> ReceivedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def cancelled_first(session: JingleSessionIO, work: Awaitable[_T]) -> _T:
    """Run the data phase ``work``; if we are cancelled meanwhile (Ctrl-C,
    SIGTERM), end the Jingle session with ``cancel`` *before* the work
    stops, which tears the bytestream down (``spec/otr.md`` 5.4): the
    peer, which acknowledges the session-terminate before we go on, hears
    that we cancelled rather than that the connection was reset. The
    acknowledgement is awaited for :data:`CANCEL_WAIT` seconds at most."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.terminate(Reason.CANCEL), CANCEL_WAIT)
        raise
    finally:
        await settle(task)


def _why(exc: BaseException) -> str:
    """An error's words for a StreamCut line (no local path in an OSError)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class StreamSender:
    """Sends streams: one offer each, never offered again after a break."""

    def __init__(
        self, context: Context, negotiator: Negotiator, sender: Sender
    ) -> None:
        self._settings = context.settings
        self._siblings = context.siblings
        self._trust_ok = context.trust_ok
        self._negotiator = negotiator
        self._sender = sender

    async def send(
        self,
        peer: str,
        source: Source,
        *,
        name: str,
        media_type: str,
        flush_interval: float | None,
        progress: ProgressCallback,
    ) -> SendResult:
        """See :meth:`XferTransfer.send_stream`."""
        started = time.perf_counter()
        full, otr_session = await self._sender.secure(peer)
        fingerprint = otr_session.their_fingerprint
        assert fingerprint is not None
        if not self._trust_ok(full, fingerprint):
            raise UntrustedPeer(full, fingerprint)
        offer = TransferOffer.stream(
            transfer_id=os.urandom(16),
            salt=os.urandom(32),
            suite=int(self._settings.suite),
            chunk_size=self._settings.chunk_size,
            name=name,
            media_type=media_type,
            mtime=int(time.time()),
        )
        otr = self._siblings.otr
        verdict = otr.expect_verdict(full, offer.transfer_id, fingerprint)
        try:
            key = otr.send_offer(otr_session, offer, fingerprint=fingerprint)
            return await self._offer(
                full,
                (otr_session, fingerprint),
                offer,
                key,
                verdict,
                source,
                flush_interval,
                progress,
                started,
            )
        finally:
            otr.forget_verdict(offer.transfer_id)

    async def _offer(
        self,
        full: str,
        to: tuple[Session, bytes],
        offer: TransferOffer,
        key: bytes,
        verdict: asyncio.Future[TransferVerdict],
        pieces: Source,
        flush_interval: float | None,
        progress: ProgressCallback,
        started: float,
    ) -> SendResult:
        """The Jingle session of one stream offer and its data phase."""
        otr_session, fingerprint = to
        sealer = stream_sealer(
            key, offer, executor=crypto_executor(), workers=self._settings.workers
        )
        state = StreamProgress()
        written: list[bytes] = []  # the SHA-256 of all read, once written
        session = self._siblings.jingle.initiate(full)
        s5b: S5B | None = None
        accepted = False
        setup = 0.0
        kind = ""
        try:
            transport, s5b = await self._negotiator.local_transport(session)
            # No <size/> and no <range/>: a stream (spec/jingle.md 3.2).
            description = FileDescription(
                name=f"{offer.transfer_id.hex()}.xfer", size=None
            )
            await self._initiate(
                session.send,
                full,
                initiate(session, self._siblings.jid, offer, description, transport),
            )
            accept = await expect(
                session, {Action.SESSION_ACCEPT}, self._settings.offer_timeout
            )
            accepted = True
            range_offset(accept, 0)  # a stream goes from its start only
            setup_start = time.perf_counter()
            stream, kind = await self._negotiator.negotiate(
                session, transport, s5b, accept
            )
            setup = time.perf_counter() - setup_start

            def on_written() -> None:
                written.append(state.digest.digest())
                self._siblings.otr.send_digest(
                    otr_session,
                    TransferDigest(
                        transfer_id=offer.transfer_id,
                        sha256=written[0],
                        size=state.plain,
                    ),
                    peer=full,
                    fingerprint=fingerprint,
                )

            await cancelled_first(
                session,
                watching(
                    session,
                    send_stream(
                        pieces,
                        stream,
                        sealer,
                        state=state,
                        progress=progress,
                        on_written=on_written,
                        stall_timeout=self._settings.stall_timeout,
                        flush_interval=flush_interval,
                    ),
                    stream,
                ),
            )
            await expect(session, set(), self._settings.offer_timeout)
        except TransferRejected as exc:
            if exc.reason == Reason.SUCCESS.value and written:
                await self._confirmed(verdict, full, written[0], state.plain)
                route = self._negotiator.route(session)
                return SendResult(
                    peer=full,
                    fingerprint=fingerprint,
                    name=offer.name,
                    size=state.plain,
                    sealed_size=state.sealed,
                    transport=kind,
                    seconds=time.perf_counter() - started,
                    setup_seconds=setup,
                    sha256=written[0],
                    via=route.via if route else "",
                    after_failure=route.after_failure if route else None,
                )
            if exc.reason == Reason.SUCCESS.value:
                raise RemoteProtocolError(
                    f"{full} claimed success before the stream ended"
                ) from None
            if not accepted:
                raise
            raise await self._cut(verdict, state, exc) from None
        except BaseException as exc:
            await session.terminate(reason_for(exc), public_text(exc, receiving=False))
            if accepted and isinstance(exc, XferError | OSError):
                raise await self._cut(verdict, state, exc) from exc
            raise
        finally:
            self._siblings.jingle.forget(session)
            if s5b is not None:
                s5b.close()
        raise RemoteProtocolError(
            "the receiver never ended the session"
        )  # pragma: no cover

    @staticmethod
    async def _initiate(
        send: Callable[[Jingle], Awaitable[None]], full: str, jingle: Jingle
    ) -> None:
        """Send the session-initiate of a stream. A receiver from before
        streams finds its ``<file/>`` malformed (no ``<size/>``) and answers
        with an error at once (``spec/jingle.md`` 3.2): say so."""
        try:
            await send(jingle)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(
                f"{full} refused the offer of a stream ({exc}); its xfer may "
                "predate streams"
            ) from exc

    async def _cut(
        self,
        verdict: asyncio.Future[TransferVerdict],
        state: StreamProgress,
        exc: XferError | OSError,
    ) -> StreamCut:
        """The error of a stream that ended early: with the receiver's count
        of verified bytes and its reason if its verdict came (it is sent
        before the Jingle session ends; a moment is allowed for it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(verdict), 1.0)
        got = verdict.result() if verdict.done() and not verdict.cancelled() else None
        if got is not None and not got.stored:
            return StreamCut(got.size, sent=state.plain, why=got.reason)
        text = exc.text if isinstance(exc, TransferRejected) and exc.text else _why(exc)
        return StreamCut(None, sent=state.plain, why=text)

    async def _confirmed(
        self,
        verdict: asyncio.Future[TransferVerdict],
        full: str,
        sha256: bytes,
        size: int,
    ) -> None:
        """Wait for the receiver's verdict after its Jingle ``success``: it
        must have verified and delivered what we read (``sha256``, ``size``).

        Raises:
            RemoteProtocolError: no verdict in time, or another hash or size.
            StreamCut: the receiver refused the stream after all.
        """
        try:
            got = await asyncio.wait_for(
                asyncio.shield(verdict), self._settings.connect_timeout
            )
        except TimeoutError:
            raise RemoteProtocolError(
                f"{full} did not confirm inside OTR that it received the stream; "
                "the Jingle success is not believed"
            ) from None
        if not got.stored:
            raise StreamCut(got.size, sent=size, why=got.reason)
        if got.sha256 != sha256 or got.size != size:
            raise RemoteProtocolError(
                f"{full} received a stream that is not the one sent"
            )
