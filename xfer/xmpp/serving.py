"""The sharer's side of a shared folder (spec/share.md section 5): answers
list and get requests that come inside OTR, for the peers it names.

A request counts only from an account on the list whose OTR fingerprint is
trusted; any other gets one refusal, ``not-allowed``, in words (never
silence, never the listing). Each request reads the folder afresh
(:class:`~xfer.aio.shared.SharedFolder`), so the listing is current and a
file removed, hidden or replaced by a symbolic link meanwhile is not served.
A get sends each file as an ordinary transfer (a fresh OTR offer under the
file's share path as its name), announced just before by ``file-coming``;
at most ``max_fetches`` files go to one account at once, the rest wait. A
file that changes while it is sent fails that transfer (the fetcher keeps
nothing) and is sent once more, as it is then; if it changes again, the
fetcher is told it failed.

A get is served once per request id and account: a fetcher asks again under
the same id when we renewed the OTR session before answering (we may have
lost the session its request came over, :mod:`xfer.xmpp.fetching`), and a
get we did read must not have its files sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.aio.shared import SourceChanged, TooManyFiles, media_type
from xfer.errors import LocalProtocolError, NotSecure, UntrustedPeer, XferError
from xfer.jid import bare_jid
from xfer.transfer.policy import clip
from xfer.transfer.refusals import Refusal, RefusalLimit
from xfer.transfer.share import (
    MAX_REASON_BYTES,
    FileComing,
    FileFailed,
    GetAccepted,
    GetDone,
    Operation,
    RefusalCode,
    ShareEntry,
    ShareRefused,
    ShareReply,
    ShareRequest,
    encode_reply,
    listing_page,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from xfer.aio.shared import SharedFolder
    from xfer.otr.session import Session
    from xfer.xmpp.otr import XferOTR
    from xfer.xmpp.transfer import XferTransfer

__all__ = ["ShareEvent", "Sharer", "refuse", "reply"]

log = logging.getLogger(__name__)

#: Files of one account sent at once, by default; requests of one account
#: under way at once, at most (more are answered ``busy``).
MAX_FETCHES = 2
MAX_REQUESTS = 8
#: Listed files waiting to be hashed in the background, at most.
MAX_HASH_QUEUE = 10_000
#: How long the sharer waits before it sends a file again that changed
#: while it was sent (s).
RETRY_DELAY = 1.0
#: How long the next pages of a listing reuse the first page's reading (s),
#: and how many such readings are kept.
LISTING_REUSE = 30.0
MAX_LISTINGS = 8
#: The get request ids remembered (a get asked again is not served again).
MAX_GETS_SEEN = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareEvent:
    """What the sharer did, for its user: ``kind`` is ``listed``,
        ``refused``, ``sending``, ``sent`` or ``failed``; for a room also
        ``member``, ``skipped``, ``left`` and ``rejoined`` (the room, joined
    again after a new session with the server: :mod:`xfer.xmpp.room_share`).
        ``peer`` the asking full JID or the occupant (a peer's text: escape it
        before showing), ``path`` the share path, ``detail`` more words."""

    kind: str
    peer: str
    path: str = ""
    detail: str = ""


def refuse(
    otr: XferOTR,
    limit: RefusalLimit,
    peer: str,
    session: Session | None,
    refusal: ShareRefused,
) -> bool:
    """Send ``refusal`` as :func:`reply` does, if ``limit`` lets the
    account of ``peer`` have one more; whether it went out."""
    try:
        account = bare_jid(peer)
    except LocalProtocolError:
        return False
    verdict = limit.refusal(account, time.monotonic())
    if verdict is Refusal.FIRST_DROPPED:
        log.warning(
            "%s asks too often: its requests are dropped without an answer "
            "for a while (said once)",
            account,
        )
    if verdict is not Refusal.SEND:
        return False
    return reply(otr, peer, session, refusal)


def reply(otr: XferOTR, peer: str, session: Session | None, answer: ShareReply) -> bool:
    """Send ``answer`` inside OTR to the fingerprint of ``session`` with
    ``peer``; False if no private conversation with it is left."""
    fingerprint = session.their_fingerprint if session is not None else None
    if fingerprint is None:
        return False
    try:
        otr.send_private(peer, fingerprint, encode_reply(answer), session)
    except NotSecure:
        log.info("could not answer %s: no private conversation", peer)
        return False
    return True


class Sharer:
    """Serves ``folder`` to the accounts ``peers`` (bare JIDs) while open.

    Use :meth:`close` to stop; requests under way are cancelled.
    """

    def __init__(
        self,
        *,
        folder: SharedFolder,
        peers: Iterable[str],
        transfer: XferTransfer,
        otr: XferOTR,
        max_fetches: int = MAX_FETCHES,
        max_requests: int = MAX_REQUESTS,
        report: Callable[[ShareEvent], object] | None = None,
        room: bool = False,
        refusals: RefusalLimit | None = None,
    ) -> None:
        self.folder = folder
        self._refusals = refusals if refusals is not None else RefusalLimit()
        self.peers = frozenset(bare_jid(p) for p in peers)
        if not self.peers and not room:
            raise LocalProtocolError("a folder is shared with at least one JID")
        #: The accounts present in the shared-with room (set_members).
        self.members: frozenset[str] = frozenset()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._transfer = transfer
        self._otr = otr
        self._max_fetches = max_fetches
        self._max_requests = max_requests
        self._report = report
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._under_way: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._hash_queue: asyncio.Queue[str] = asyncio.Queue(MAX_HASH_QUEUE)
        self._queued: set[str] = set()
        self._listings: dict[tuple[str, str, bool], tuple[float, list[ShareEntry]]] = {}
        #: (account, request id) of the gets served, the oldest first.
        self._gets: dict[tuple[str, bytes], None] = {}
        self._hasher = asyncio.ensure_future(self._hash_in_background())
        self.closed = False

    def _event(self, kind: str, peer: str, path: str = "", detail: str = "") -> None:
        if self._report is not None:
            self._report(ShareEvent(kind=kind, peer=peer, path=path, detail=detail))

    # -- requests --------------------------------------------------------------------

    def handle(self, peer: str, session: Session, request: ShareRequest) -> None:
        """A well-formed request from the full JID ``peer`` over ``session``."""
        fingerprint = session.their_fingerprint
        try:
            account = bare_jid(peer)
        except LocalProtocolError:
            return
        refusal = None
        if self.closed:
            refusal = (RefusalCode.NOT_SHARING, "the folder is no longer shared")
        elif account not in self.peers and account not in self.members:
            refusal = (RefusalCode.NOT_ALLOWED, "this folder is not shared with you")
        elif fingerprint is None or not self._otr.trust.is_trusted(peer, fingerprint):
            refusal = (
                RefusalCode.NOT_ALLOWED,
                "the sharer does not trust your OTR fingerprint",
            )
        elif self._under_way.get(account, 0) >= self._max_requests:
            refusal = (RefusalCode.BUSY, "too many requests at once; ask again later")
        if refusal is not None:
            code, text = refusal
            self._refuse(peer, session, request, code, text)
            return
        if request.op is Operation.GET:
            key = (account, request.request_id)
            if key in self._gets:
                log.info("%s asked for a get served already: not served again", peer)
                return
            self._gets[key] = None
            while len(self._gets) > MAX_GETS_SEEN:
                del self._gets[next(iter(self._gets))]
        self._under_way[account] = self._under_way.get(account, 0) + 1
        task = asyncio.ensure_future(self._serve(peer, session, request))
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._under_way[account] -= 1

        task.add_done_callback(done)

    def _refuse(
        self,
        peer: str,
        session: Session,
        request: ShareRequest,
        code: RefusalCode,
        text: str,
    ) -> None:
        """Refuse, within the budget of refusals (reported only if sent)."""
        if refuse(
            self._otr,
            self._refusals,
            peer,
            session,
            ShareRefused(
                request_id=request.request_id,
                code=code,
                reason=clip(text, MAX_REASON_BYTES),
            ),
        ):
            self._event("refused", peer, request.path, text)

    async def _serve(self, peer: str, session: Session, request: ShareRequest) -> None:
        try:
            if request.op is Operation.LIST:
                await self._list(peer, session, request)
            else:
                await self._get(peer, session, request)
        except FileNotFoundError:
            self._refuse(
                peer,
                session,
                request,
                RefusalCode.NOT_FOUND,
                "no such file or directory in the shared folder",
            )
        except TooManyFiles:
            self._refuse(
                peer,
                session,
                request,
                RefusalCode.TOO_LARGE,
                "too many files: ask for a smaller part of the folder",
            )
        except OSError as exc:
            log.warning("could not read the shared folder: %s", exc)
            self._refuse(
                peer,
                session,
                request,
                RefusalCode.FAILED,
                f"the sharer could not read the folder ({exc.strerror or 'I/O error'})",
            )

    async def _list(self, peer: str, session: Session, request: ShareRequest) -> None:
        # A first page reads the folder afresh; the next pages of the same
        # listing (asked "after" a path) reuse that reading for a little
        # while: a big tree is walked once, not once per page.
        key = (bare_jid(peer), request.path, request.recursive)
        now = time.monotonic()
        cached = self._listings.get(key)
        if request.after and cached is not None and now - cached[0] < LISTING_REUSE:
            entries = cached[1]
        else:
            entries = await asyncio.to_thread(
                self.folder.listing, request.path, recursive=request.recursive
            )
            self._listings.pop(key, None)
            self._listings[key] = (now, entries)
            while len(self._listings) > MAX_LISTINGS:
                del self._listings[next(iter(self._listings))]
        page = listing_page(request.request_id, entries, request.after)
        reply(self._otr, peer, session, page)
        n = len(page.entries)
        self._event("listed", peer, request.path, f"{n} entr{'y' if n == 1 else 'ies'}")
        self._hash_later(page.entries)

    async def _get(self, peer: str, session: Session, request: ShareRequest) -> None:
        files = await asyncio.to_thread(self.folder.files, request.path)
        rid = request.request_id
        total = sum(size for _, size in files)
        reply(
            self._otr,
            peer,
            session,
            GetAccepted(request_id=rid, files=len(files), size=total),
        )
        slots = self._slots.setdefault(
            bare_jid(peer), asyncio.Semaphore(self._max_fetches)
        )
        todo = iter(files)
        counts = {"sent": 0, "failed": 0}
        broken: list[XferError] = []

        async def worker() -> None:
            for path, _ in todo:
                if broken:
                    failed = FileFailed(
                        request_id=rid, path=path, reason=clip(str(broken[0]), 400)
                    )
                    reply(self._otr, peer, session, failed)
                    counts["failed"] += 1
                    continue
                async with slots:
                    ok = await self._send_one(peer, session, rid, path, broken)
                counts["sent" if ok else "failed"] += 1

        await asyncio.gather(*(worker() for _ in range(self._max_fetches)))
        reply(
            self._otr,
            peer,
            session,
            GetDone(request_id=rid, sent=counts["sent"], failed=counts["failed"]),
        )
        await asyncio.to_thread(self._save_cache)

    async def _send_one(
        self,
        peer: str,
        session: Session,
        rid: bytes,
        path: str,
        broken: list[XferError],
    ) -> bool:
        """Send the share's file ``path``, announced; once more if it
        changed while it was sent. Whether it was delivered."""
        why = "the file is no longer in the shared folder"
        for attempt in (1, 2):
            try:
                opened = await asyncio.to_thread(self.folder.open, path)
            except OSError:
                break
            try:
                if not reply(
                    self._otr,
                    peer,
                    session,
                    FileComing(request_id=rid, path=path, size=opened.stat.st_size),
                ):
                    broken.append(NotSecure("the private conversation ended"))
                    why = "the private conversation ended"
                    break
                self._event("sending", peer, path, f"{opened.stat.st_size} bytes")
                result = await self._transfer.send_file(
                    peer,
                    opened.source,
                    name=path,
                    media_type=media_type(path) or "application/octet-stream",
                    check_source=opened.check_unchanged,
                )
            except SourceChanged:
                why = "the file kept changing while it was sent"
                log.info("%s changed while it was sent (try %d)", path, attempt)
                # A file being written is likely written some more: give the
                # writer (and the fetcher's end of the failed try) a moment.
                await asyncio.sleep(RETRY_DELAY)
                continue
            except (NotSecure, UntrustedPeer) as exc:
                broken.append(exc)
                why = str(exc)
                break
            except (XferError, OSError) as exc:
                why = str(exc) if isinstance(exc, XferError) else "could not read it"
                break
            finally:
                opened.close()
            with contextlib.suppress(OSError):
                opened_again = await asyncio.to_thread(self.folder.open, path)
                try:
                    if self.folder.cache is not None and (
                        opened_again.seen() == opened.seen()
                    ):
                        self.folder.cache.put(path, opened.seen(), result.sha256)
                finally:
                    opened_again.close()
            resumed = (
                f"; the fetcher had {result.resumed_from} bytes of it already"
                if result.resumed_from
                else ""
            )
            self._event("sent", peer, path, f"SHA-256 {result.sha256.hex()}{resumed}")
            return True
        self._event("failed", peer, path, why)
        reply(
            self._otr,
            peer,
            session,
            FileFailed(request_id=rid, path=path, reason=clip(why, MAX_REASON_BYTES)),
        )
        return False

    # -- hashes ------------------------------------------------------------------------

    def _hash_later(self, entries: Iterable[ShareEntry]) -> None:
        """Hash listed files whose SHA-256 is not known yet, one at a time,
        in the background: the next listing shows them."""
        if self.folder.cache is None:
            return
        for entry in entries:
            if entry.sha256 is None and entry.type.name == "FILE":
                if entry.path in self._queued or self._hash_queue.full():
                    continue
                self._queued.add(entry.path)
                self._hash_queue.put_nowait(entry.path)

    async def _hash_in_background(self) -> None:
        while True:
            path = await self._hash_queue.get()
            self._queued.discard(path)
            await asyncio.to_thread(self.folder.hash, path, lambda: self.closed)
            if self._hash_queue.empty():
                await asyncio.to_thread(self._save_cache)

    def _save_cache(self) -> None:
        if self.folder.cache is not None:
            try:
                self.folder.cache.save()
            except OSError as exc:
                log.warning("could not save the hash cache: %s", exc)

    def set_members(self, accounts: Iterable[str]) -> None:
        """Serve these accounts (bare JIDs) too, in place of the members
        set before: those of a room, as they come and go."""
        self.members = frozenset(bare_jid(a) for a in accounts)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer()`` when the sharer closes (leave a room)."""
        self._closers.append(closer)

    async def close(self) -> None:
        """Stop serving: refuse new requests, cancel those under way."""
        self.closed = True
        for closer in self._closers:
            with contextlib.suppress(Exception):
                await closer()
        pending = [*self._tasks, self._hasher]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._save_cache()
