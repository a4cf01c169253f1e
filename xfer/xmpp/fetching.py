"""The fetcher's side of a shared folder (spec/share.md section 6): list
what a peer shares with us, fetch files or subtrees of it.

Requests go inside OTR, to a peer whose fingerprint we trust, and only its
answers count: a reply from another account or another fingerprint, or for
a request we did not make, is ignored. A get is answered by transfers, each
an ordinary OTR offer; the fetcher accepts without asking only an offer
from the fingerprint it asked, named by a path that a ``file-coming`` of
its own outstanding request announced, and that lies within what it asked
for. Every other offer goes to the application as usual
(:meth:`~xfer.xmpp.transfer.XferTransfer.next_offer`). Received files land
under the destination by their share path made safe
(:func:`~xfer.aio.shared.fetch_destination`); a file whose earlier fetch
broke off goes on from the part kept (the receiver's resume by file id).

A request goes over the OTR session we hold with the sharer; if the sharer
lost its half (its client restarted, or its XMPP session was ended and a new
one made), it cannot read the request and starts a new key exchange
instead. A request not answered yet is then sent again, under the same id,
over the renewed session (:meth:`Fetcher.on_secure`), a few times at most;
the sharer serves one get id once (:mod:`xfer.xmpp.serving`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.aio.bytestream import no_progress
from xfer.aio.shared import MAX_GET_FILES, MAX_LISTED, fetch_destination
from xfer.errors import (
    DestinationExists,
    LocalProtocolError,
    NotSecure,
    RemoteProtocolError,
    SharingRefused,
    TransferTimeout,
    UntrustedPeer,
    XferError,
)
from xfer.jid import bare_jid
from xfer.transfer.share import (
    FileComing,
    FileFailed,
    GetAccepted,
    GetDone,
    Operation,
    RefusalCode,
    ShareEntry,
    ShareListing,
    ShareRefused,
    ShareReply,
    ShareRequest,
    path_key,
    within,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from xfer.aio.bytestream import ProgressCallback
    from xfer.otr.session import Session
    from xfer.xmpp.otr import XferOTR
    from xfer.xmpp.transfer import IncomingOffer, XferTransfer

__all__ = ["FetchResult", "FetchedFile", "Fetcher"]

log = logging.getLogger(__name__)

#: Replies waiting to be read for one request, at most (more are dropped).
MAX_QUEUED_REPLIES = 1024
#: How often one request is sent again over a renewed OTR session, at most.
MAX_RESENDS = 2
#: Refusals of one path of a fetch (the others are still asked for); the
#: others end the fetch (SharingRefused).
PER_PATH = frozenset({"not-found", "too-large"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedFile:
    """A file fetched from a share: its share path, where it is now, its
    size and SHA-256 (the sharer's digest, which the stored file matched)."""

    path: str
    local: Path
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    """What a fetch brought: the files stored, and (path, why) of those
    that did not arrive. ``ok`` when nothing failed."""

    peer: str
    stored: tuple[FetchedFile, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(kw_only=True)
class _Request:
    request_id: bytes
    peer: str
    fingerprint: bytes
    replies: asyncio.Queue[ShareReply] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED_REPLIES)
    )
    #: Takes a get's file-coming at once, as it arrives: the offer it
    #: announces follows right behind it and must find it registered.
    on_coming: Callable[[FileComing], None] | None = None
    #: The request as sent, and the id of the key exchange it went under.
    payload: bytes = b""
    ssid: bytes | None = None
    #: Whether the sharer answered it at all; how often it was sent again.
    answered: bool = False
    resent: int = 0


@dataclass(kw_only=True)
class _Expected:
    """A file a sharer announced for one of our gets."""

    path: str
    dest: Path
    overwrite: bool
    progress: ProgressCallback
    on_file: Callable[[FetchedFile], object] | None
    task: asyncio.Task[None] | None = None
    #: An offer of the file that came while a receipt of it was under way
    #: (the sharer's new try after a failed one): taken when that ends.
    waiting: IncomingOffer | None = None
    stored: FetchedFile | None = None
    error: str | None = None
    #: The error is ours: we could not store the file where it belongs.
    unstorable: bool = False


_CODES = {code: code.name.lower().replace("_", "-") for code in RefusalCode}


def _refused(peer: str, refusal: ShareRefused) -> SharingRefused:
    return SharingRefused(
        f"{peer} refused: {refusal.reason or _CODES[refusal.code]}",
        code=_CODES[refusal.code],
        reason=refusal.reason,
    )


class Fetcher:
    """Asks peers for their shared folders; takes the offers that answer."""

    def __init__(
        self,
        transfer: XferTransfer,
        otr: XferOTR,
        *,
        answer_timeout: Callable[[], float],
        idle_timeout: Callable[[], float],
    ) -> None:
        self._transfer = transfer
        self._otr = otr
        self._answer_timeout = answer_timeout
        self._idle_timeout = idle_timeout
        self._requests: dict[bytes, _Request] = {}
        #: (account, fingerprint, share path) -> the file announced.
        self._expected: dict[tuple[str, bytes, str], _Expected] = {}

    # -- what comes in ---------------------------------------------------------------

    def on_reply(self, peer: str, session: Session, answer: ShareReply) -> None:
        """A share reply from ``peer`` over ``session``: it counts only for a
        request of ours, from the account and fingerprint it went to."""
        request = self._requests.get(answer.request_id)
        if request is None:
            log.info("ignoring a share reply from %s to no request of ours", peer)
            return
        if (
            bare_jid(peer) != bare_jid(request.peer)
            or session.their_fingerprint != request.fingerprint
        ):
            log.warning("ignoring a share reply from %s: not the peer asked", peer)
            return
        request.answered = True
        if isinstance(answer, FileComing):
            if request.on_coming is not None:
                request.on_coming(answer)
            return
        try:
            request.replies.put_nowait(answer)
        except asyncio.QueueFull:
            log.warning("dropping a share reply from %s: too many waiting", peer)

    def on_secure(self, peer: str, fingerprint: bytes) -> None:
        """A key exchange with the full JID ``peer`` (proving ``fingerprint``)
        just ended. If a request of ours to it waits for its first answer,
        under older keys, the peer most likely lost the session the request
        went over and could not read it: send it again over the new one."""
        session = self._otr.session(peer)
        if session is None or session.their_fingerprint != fingerprint:
            return
        for request in list(self._requests.values()):
            if (
                request.peer != peer
                or request.fingerprint != fingerprint
                or request.answered
                or request.ssid == session.ssid
                or request.resent >= MAX_RESENDS
            ):
                continue
            request.resent += 1
            request.ssid = session.ssid
            log.info("asking %s again over the renewed private conversation", peer)
            try:
                self._otr.send_private(peer, fingerprint, request.payload, session)
            except NotSecure:  # pragma: no cover - it went secure just now
                log.info("could not ask %s again: no private conversation", peer)

    def take(self, incoming: IncomingOffer) -> bool:
        """Take an offer that answers one of our gets (the receiver's hook):
        from the fingerprint asked, under an announced path."""
        try:
            key = (bare_jid(incoming.peer), incoming.fingerprint, incoming.name)
        except LocalProtocolError:
            return False
        expected = self._expected.get(key)
        if expected is None or expected.stored is not None:
            return False
        if expected.task is not None and not expected.task.done():
            # The sharer tries again while our receipt of its failed try has
            # not ended yet (it waits for a digest that will not come).
            if expected.waiting is not None:
                return False
            expected.waiting = incoming
            return True
        expected.task = asyncio.ensure_future(self._receive(expected, incoming))
        return True

    async def _receive(self, expected: _Expected, incoming: IncomingOffer) -> None:
        """Receive ``incoming``, then an offer that came meanwhile."""
        offer: IncomingOffer | None = incoming
        while offer is not None:
            await self._receive_one(expected, offer)
            offer, expected.waiting = expected.waiting, None
            if offer is not None and expected.stored is not None:
                with contextlib.suppress(XferError):
                    await offer.decline("received already")
                offer = None

    async def _receive_one(self, expected: _Expected, incoming: IncomingOffer) -> None:
        try:
            target = await asyncio.to_thread(
                fetch_destination, expected.dest, expected.path, expected.overwrite
            )
        except (XferError, OSError) as exc:
            # (A file or a link where a folder goes is never written over.)
            why = (
                f"{exc.path} is in the way"
                if isinstance(exc, DestinationExists)
                else exc
            )
            expected.error = f"could not store it: {why}"
            expected.unstorable = True
            with contextlib.suppress(XferError):
                await incoming.decline("the fetcher could not store the file")
            return
        try:
            local = await incoming.accept(
                target, overwrite=expected.overwrite, progress=expected.progress
            )
        except (XferError, OSError) as exc:
            expected.error = str(exc) or type(exc).__name__
            return
        expected.error = None
        expected.stored = FetchedFile(
            path=expected.path,
            local=local,
            size=incoming.size,
            sha256=incoming.sha256 or b"",
        )
        if expected.on_file is not None:
            expected.on_file(expected.stored)

    # -- asking ------------------------------------------------------------------------

    async def _ask(
        self,
        peer: str,
        request: ShareRequest,
        on_coming: Callable[[_Request, FileComing], None] | None = None,
    ) -> _Request:
        """Send ``request`` to ``peer`` inside OTR, to a trusted fingerprint."""
        full, session = await self._transfer.secure(peer)
        fingerprint = session.their_fingerprint
        assert fingerprint is not None
        if not self._otr.trust.is_trusted(full, fingerprint):
            raise UntrustedPeer(full, fingerprint)
        pending = _Request(
            request_id=request.request_id,
            peer=full,
            fingerprint=fingerprint,
            payload=request.encode(),
            ssid=session.ssid,
        )
        if on_coming is not None:
            pending.on_coming = lambda coming: on_coming(pending, coming)
        self._requests[request.request_id] = pending
        try:
            self._otr.send_private(full, fingerprint, pending.payload, session)
        except BaseException:
            del self._requests[request.request_id]
            raise
        return pending

    async def _next(self, pending: _Request, timeout: float | None) -> ShareReply:
        try:
            return await asyncio.wait_for(pending.replies.get(), timeout)
        except TimeoutError:
            raise TransferTimeout(
                f"{pending.peer} did not answer in time: is it sharing a folder "
                "('xfer share') with you?"
            ) from None

    async def listing(
        self, peer: str, path: str = "", *, recursive: bool = False
    ) -> list[ShareEntry]:
        """What ``peer`` shares with us at ``path`` (see
        :meth:`xfer.xmpp.share.XferShare.list_shared`)."""
        entries: list[ShareEntry] = []
        after = ""
        while True:
            request = ShareRequest(
                request_id=os.urandom(16),
                op=Operation.LIST,
                path=path,
                recursive=recursive,
                after=after,
            )
            pending = await self._ask(peer, request)
            try:
                answer = await self._next(pending, self._answer_timeout())
            finally:
                del self._requests[request.request_id]
            if isinstance(answer, ShareRefused):
                raise _refused(pending.peer, answer)
            if not isinstance(answer, ShareListing):
                raise RemoteProtocolError(f"{pending.peer} answered a list with a get")
            for entry in answer.entries:
                if not within(entry.path, path) or (
                    after and path_key(entry.path) <= path_key(after)
                ):
                    raise RemoteProtocolError(
                        f"{pending.peer} listed a path it was not asked for"
                    )
            entries += answer.entries
            if len(entries) > MAX_LISTED:
                raise RemoteProtocolError(f"{pending.peer} lists too many entries")
            if not answer.more:
                return entries
            if not answer.entries:
                raise RemoteProtocolError(f"{pending.peer} sent an empty page")
            after = answer.entries[-1].path

    async def fetch(
        self,
        peer: str,
        paths: Iterable[str],
        dest: Path,
        *,
        overwrite: bool = False,
        progress: Callable[[str], ProgressCallback] | None = None,
        on_file: Callable[[FetchedFile], object] | None = None,
    ) -> FetchResult:
        """Fetch ``paths`` of ``peer``'s share into ``dest`` (see
        :meth:`xfer.xmpp.share.XferShare.fetch`)."""
        stored: list[FetchedFile] = []
        failed: list[tuple[str, str]] = []
        asked = peer
        for top in paths:
            request = ShareRequest(
                request_id=os.urandom(16), op=Operation.GET, path=top
            )
            announced: dict[str, _Expected] = {}

            def coming(
                pending: _Request,
                answer: FileComing,
                top: str = top,
                announced: dict[str, _Expected] = announced,
            ) -> None:
                if answer.path in announced:
                    return  # announced again: the sharer tries once more
                if not within(answer.path, top) or len(announced) >= MAX_GET_FILES:
                    log.warning("ignoring a file announced out of turn")
                    return
                expected = _Expected(
                    path=answer.path,
                    dest=dest,
                    overwrite=overwrite,
                    progress=progress(answer.path) if progress else no_progress,
                    on_file=on_file,
                )
                announced[answer.path] = expected
                key = (bare_jid(pending.peer), pending.fingerprint, answer.path)
                self._expected[key] = expected

            pending = await self._ask(peer, request, coming)
            asked = pending.peer
            try:
                files = await self._get(pending, announced)
            except SharingRefused as exc:
                if exc.code not in PER_PATH:
                    raise
                failed.append((top, exc.reason or exc.code))  # the next path may be
                continue
            finally:
                del self._requests[request.request_id]
            for expected in files:
                if expected.stored is not None:
                    stored.append(expected.stored)
                else:
                    failed.append((expected.path, expected.error or "it did not come"))
        return FetchResult(peer=asked, stored=tuple(stored), failed=tuple(failed))

    async def _get(
        self, pending: _Request, announced: dict[str, _Expected]
    ) -> list[_Expected]:
        """Follow a get to its end; the files it announced (``announced``,
        filled as file-coming replies arrive, see :meth:`on_reply`)."""
        account = bare_jid(pending.peer)
        try:
            first = await self._next(pending, self._answer_timeout())
            if isinstance(first, ShareRefused):
                raise _refused(pending.peer, first)
            if not isinstance(first, GetAccepted):
                raise RemoteProtocolError(f"{pending.peer} did not accept the get")
            while True:
                answer = await self._wait(pending, announced)
                if isinstance(answer, GetDone):
                    break
                if isinstance(answer, FileFailed) and answer.path in announced:
                    expected = announced[answer.path]
                    # Where we could not store it, our reason says more
                    # (the sharer's is that we "declined the file").
                    if expected.stored is None and not expected.unstorable:
                        expected.error = answer.reason or "the sharer could not send it"
                else:
                    log.warning("ignoring an unexpected share reply %r", answer)
            running = [e.task for e in announced.values() if e.task is not None]
            await asyncio.gather(*running, return_exceptions=True)
        finally:
            for path, expected in announced.items():
                self._expected.pop((account, pending.fingerprint, path), None)
                if expected.task is not None and not expected.task.done():
                    expected.task.cancel()
        return list(announced.values())

    async def _wait(
        self, pending: _Request, announced: dict[str, _Expected]
    ) -> ShareReply:
        """The next reply; the idle timeout counts only while no file of
        ours is being received."""
        while True:
            try:
                return await self._next(pending, self._idle_timeout())
            except TransferTimeout:
                if not any(
                    e.task is not None and not e.task.done() for e in announced.values()
                ):
                    raise
