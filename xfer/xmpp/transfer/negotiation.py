"""The transport of one transfer, and waiting on the peer's Jingle actions.

XEP-0260 (Jingle SOCKS5): our candidates and the peer's we reach (gathered
and tried by :mod:`.candidates`), the reports, the nomination and the
proxy's activation; XEP-0261 (Jingle IBB) through transport-replace when no
candidate works; the :class:`~.candidates.Route` the data took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from xfer.errors import (
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
    XferError,
)
from xfer.framing.socks5 import dst_addr
from xfer.jingle import Action, Role, SessionState
from xfer.jingle.candidates import (
    Candidate,
    CandidateType,
    Nomination,
    nominate,
)
from xfer.jingle.wire import Content, IBBTransport, Jingle, S5BTransport
from xfer.transfer.policy import broke_off
from xfer.xmpp.jingle import rejection
from xfer.xmpp.transfer.candidates import Gatherer, Route, hostport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from xfer.aio.bytestream import ByteStream
    from xfer.aio.tcp import TcpConnection
    from xfer.xmpp.ibb import IBBStream
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.transfer.context import Settings, Siblings

log = logging.getLogger(__name__)

#: The name of the one content of an xfer session.
CONTENT = "file"
#: How long a receiver whose sender reported a break keeps reading what is
#: already on its way (seconds).
DRAIN_GRACE = 10.0


class Negotiator:
    """Agrees on a transport with the peer of a Jingle session."""

    def __init__(self, settings: Settings, siblings: Siblings) -> None:
        self._settings = settings
        self._siblings = siblings
        self._gatherer = Gatherer(settings, siblings)
        #: The route each session's data took (forgotten with the session).
        self._routes: weakref.WeakKeyDictionary[JingleSessionIO, Route] = (
            weakref.WeakKeyDictionary()
        )

    def route(self, session: JingleSessionIO) -> Route | None:
        """The path the data of ``session`` takes (once negotiated)."""
        return self._routes.get(session)

    async def local_transport(
        self, session: JingleSessionIO, *, sid: str | None = None
    ) -> tuple[S5BTransport | IBBTransport, S5B | None]:
        """Our transport offer: SOCKS5 candidates if we have any, else IBB.

        The candidates, in XEP-0260's priority order: this host's interface
        addresses (``direct``), the addresses the user added (``assisted``),
        our server's proxies, then those of the peer's server (``proxy``);
        see ``spec/jingle.md`` section 6.2.
        """
        settings = self._settings
        sid = sid or secrets.token_urlsafe(12)
        us = self._siblings.jid
        address = dst_addr(sid, us, session.peer)
        # Proxy discovery (disco IQs, perhaps across servers) runs while we
        # listen and look at our interfaces.
        proxies = asyncio.ensure_future(
            self._gatherer.proxies(session.peer)
            if settings.socks5_proxy
            else asyncio.sleep(0, [])
        )
        candidates: list[Candidate] = []
        waiter: asyncio.Future[TcpConnection] | None = None
        try:
            if settings.socks5_direct:
                _, port = await self._siblings.socks5.listen()
                waiter = self._siblings.socks5.expect(address)
                candidates += self._gatherer.direct(us, port)
            candidates += await proxies
        except BaseException:
            if waiter is not None:
                waiter.cancel()
            raise
        finally:
            await settle(proxies)
        if not candidates and session.role is Role.INITIATOR:
            if waiter is not None:
                waiter.cancel()
            if not settings.ibb:
                raise NoUsableTransport("every transport is turned off")
            return IBBTransport(sid=sid, block_size=settings.ibb_block_size), None
        s5b = S5B(sid=sid, candidates=candidates, incoming=waiter)
        return (
            S5BTransport(
                sid=sid,
                dstaddr=address.decode(),
                mode="tcp" if session.role is Role.INITIATOR else None,
                candidates=tuple(candidates),
            ),
            s5b,
        )

    async def negotiate(
        self,
        session: JingleSessionIO,
        ours: S5BTransport | IBBTransport,
        s5b: S5B | None,
        theirs_jingle: Jingle,
    ) -> tuple[ByteStream, str]:
        """Agree on a transport with the peer; return the stream and its kind."""
        content = theirs_jingle.content
        theirs = content.transport if content else None
        timeout = self._settings.connect_timeout
        if isinstance(ours, IBBTransport):
            if session.role is Role.INITIATOR:
                block = theirs.block_size if isinstance(theirs, IBBTransport) else 0
                stream = await self._open_ibb(session, ours, block)
                self._routes[session] = Route(kind="ibb", via="")
                return stream, "ibb"
            raise NoUsableTransport("IBB is not ours to open")  # pragma: no cover
        assert s5b is not None
        if not isinstance(theirs, S5BTransport) or theirs.sid != ours.sid:
            raise RemoteProtocolError("the peer answered with another transport")
        us, peer = self._siblings.jid, session.peer
        try:
            reached = await self._gatherer.reach(theirs, dst_addr(ours.sid, peer, us))
            try:
                got = await self._report_and_nominate(
                    session, ours, s5b, reached.candidate, reached.connection, timeout
                )
            except BaseException:
                if reached.connection is not None:
                    reached.connection.abort()
                raise
        finally:
            s5b.close()
        if got is not None:
            stream, used = got
            kind = f"socks5-{used.type.label}"
            via = (
                used.jid
                if used.type is CandidateType.PROXY
                else hostport(used.host, used.port)
            )
        else:
            stream, kind = await self._fallback(session)
            via = ""
        after = None
        if reached.failed_at is not None:
            after = asyncio.get_running_loop().time() - reached.failed_at
        self._routes[session] = Route(kind=kind, via=via, after_failure=after)
        log.info("%s: the data goes %s %s", session.peer, kind, via)
        return stream, kind

    async def _report_and_nominate(
        self,
        session: JingleSessionIO,
        ours: S5BTransport,
        s5b: S5B,
        reached: Candidate | None,
        connection: TcpConnection | None,
        timeout: float,
    ) -> tuple[ByteStream, Candidate] | None:
        """Tell the peer which of its candidates we reached, learn which of
        ours it reached, and take the nominated connection (XEP-0260)."""
        peer = session.peer
        info = S5BTransport(
            sid=ours.sid,
            candidate_used=reached.cid if reached else None,
            candidate_error=reached is None,
        )
        await session.send(transport_info(session, info))
        peer_info = await expect_transport(
            session,
            lambda t: t.candidate_used is not None or t.candidate_error,
            timeout,
        )
        peer_used = None
        if peer_info.candidate_used is not None:
            peer_used = next(
                (c for c in s5b.candidates if c.cid == peer_info.candidate_used), None
            )
            if peer_used is None:
                raise RemoteProtocolError("the peer used a candidate we never offered")
        choice = nominate(
            we_used=reached,
            peer_used=peer_used,
            we_are_initiator=session.role is Role.INITIATOR,
        )
        if choice is None:
            return None
        if not choice.ours:
            assert connection is not None
            s5b.close()
            if choice.peer_activates:
                cid = choice.candidate.cid  # the activation must name it
                await expect_transport(
                    session, lambda t: t.activated == cid or t.proxy_error, timeout
                )
            return self._siblings.socks5.stream(
                peer, ours.sid, connection, choice.candidate.jid
            ), choice.candidate
        if connection is not None:
            connection.abort()  # we reached theirs, but ours won
        return await self._take_ours(session, ours.sid, s5b, choice, timeout)

    async def _take_ours(
        self,
        session: JingleSessionIO,
        sid: str,
        s5b: S5B,
        choice: Nomination,
        timeout: float,
    ) -> tuple[ByteStream, Candidate]:
        """The nominated candidate is one we offered: the peer's connection to
        our streamhost, or the proxy, which we connect to and activate."""
        socks5 = self._siblings.socks5
        us, peer = self._siblings.jid, session.peer
        candidate = choice.candidate
        if choice.we_activate:
            own: TcpConnection | None = None
            try:
                own = await socks5.connect(
                    candidate.host, candidate.port, choice.dst_addr(sid, us, peer)
                )
                await socks5.activate(candidate.jid, sid, peer)
            except (OSError, TimeoutError, XferError):
                if own is not None:
                    own.abort()
                info = S5BTransport(sid=sid, proxy_error=True)
                await session.send(transport_info(session, info))
                raise TransportError(
                    f"could not activate the proxy {candidate.jid}"
                ) from None
            info = S5BTransport(sid=sid, activated=candidate.cid)
            await session.send(transport_info(session, info))
            return socks5.stream(peer, sid, own, candidate.jid), candidate
        if s5b.incoming is None:
            raise RemoteProtocolError("the peer used a direct candidate we never had")
        try:
            incoming = await asyncio.wait_for(s5b.take(), timeout)
        except TimeoutError:
            raise TransferTimeout("the peer never connected to our candidate") from None
        return socks5.stream(peer, sid, incoming, us), candidate

    async def _fallback(self, session: JingleSessionIO) -> tuple[ByteStream, str]:
        """No SOCKS5 candidate worked: transport-replace to IBB (XEP-0261)."""
        settings, ibb_plugin = self._settings, self._siblings.ibb
        timeout = settings.connect_timeout
        if session.role is Role.INITIATOR:
            if not settings.ibb:
                raise NoUsableTransport("no SOCKS5 candidate worked and IBB is off")
            ibb = IBBTransport(
                sid=secrets.token_urlsafe(12), block_size=settings.ibb_block_size
            )
            await session.send(
                session.jingle(Action.TRANSPORT_REPLACE, contents=(carrier(ibb),))
            )
            answer = await expect(
                session, {Action.TRANSPORT_ACCEPT, Action.TRANSPORT_REJECT}, timeout
            )
            t = answer.content.transport if answer.content else None
            if answer.action is Action.TRANSPORT_REJECT or not isinstance(
                t, IBBTransport
            ):
                raise NoUsableTransport("the peer refused IBB after SOCKS5 failed")
            return await self._open_ibb(session, ibb, t.block_size), "ibb"
        replace = await expect(session, {Action.TRANSPORT_REPLACE}, timeout)
        t = replace.content.transport if replace.content else None
        if not isinstance(t, IBBTransport) or not settings.ibb:
            await session.send(
                session.jingle(
                    Action.TRANSPORT_REJECT,
                    contents=(carrier(t) if t else carrier(None),),
                )
            )
            raise NoUsableTransport("SOCKS5 failed and the replacement is unusable")
        accepted = IBBTransport(sid=t.sid, block_size=self.ibb_block(t))
        waiter = ibb_plugin.expect(session.peer, t.sid)
        await session.send(
            session.jingle(Action.TRANSPORT_ACCEPT, contents=(carrier(accepted),))
        )
        return await self.await_stream(session, waiter), "ibb"

    def ibb_block(self, offered: IBBTransport) -> int:
        """The block size we take for an IBB transport the peer offered."""
        limit: int = self._siblings.ibb.config["max_block_size"]
        return min(offered.block_size, limit)

    async def _open_ibb(
        self, session: JingleSessionIO, ibb: IBBTransport, block: int
    ) -> ByteStream:
        size = min(ibb.block_size, block) if block else ibb.block_size
        return await before_end(
            session,
            self._siblings.ibb.open(
                session.peer,
                sid=ibb.sid,
                block_size=size,
                timeout=self._settings.connect_timeout,
            ),
        )

    async def await_stream(
        self, session: JingleSessionIO, waiter: asyncio.Future[IBBStream]
    ) -> ByteStream:
        """The IBB stream the peer opens for ``session``, in time."""
        try:
            stream = await before_end(
                session, asyncio.wait_for(waiter, self._settings.connect_timeout)
            )
        except TimeoutError:
            raise TransferTimeout(
                f"{session.peer} never opened the IBB stream"
            ) from None
        self._routes.setdefault(session, Route(kind="ibb", via=""))
        return stream


def carrier(transport: S5BTransport | IBBTransport | None) -> Content:
    """The content that carries ``transport`` in a transport action."""
    return Content(
        name=CONTENT,
        creator=Role.INITIATOR,
        senders="initiator",
        transport=transport,
    )


def transport_info(session: JingleSessionIO, info: S5BTransport) -> Jingle:
    return session.jingle(Action.TRANSPORT_INFO, contents=(carrier(info),))


# -- waiting for the peer ------------------------------------------------------


async def expect(
    session: JingleSessionIO, actions: set[Action], timeout: float
) -> Jingle:
    """The peer's next action among ``actions``, skipping informational ones.

    Raises:
        TransferRejected / TransferDeclined: the peer ended the session
        (``reason`` "success" included, for the sender to recognise).
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        jingle = await session.next(max(left, 0.001))
        if jingle.action is Action.SESSION_TERMINATE:
            raise rejection(session.peer, jingle)
        if jingle.action in actions:
            return jingle


async def expect_transport(
    session: JingleSessionIO,
    wanted: Callable[[S5BTransport], bool],
    timeout: float,
) -> S5BTransport:
    """The peer's next transport-info that ``wanted`` accepts, within
    ``timeout`` seconds in all (others in between do not extend it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TransferTimeout(f"{session.peer} did not report on SOCKS5")
        jingle = await expect(session, {Action.TRANSPORT_INFO}, left)
        t = jingle.content.transport if jingle.content else None
        if isinstance(t, S5BTransport) and wanted(t):
            if t.proxy_error:
                raise TransportError("the peer could not activate its proxy")
            return t


_T = TypeVar("_T")


async def before_end(session: JingleSessionIO, work: Awaitable[_T]) -> _T:
    """``work`` (opening a stream, waiting for one), unless the peer ends
    the session first: then what ended it is raised at once, not a timeout
    once ``work`` gives up."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(session.ending.wait())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        await expect(session, set(), 5.0)  # raises what ended it
        raise AssertionError("expect() returned for no action")  # pragma: no cover
    finally:
        await settle(task, watcher)


async def watching(
    session: JingleSessionIO,
    work: Awaitable[_T],
    stream: ByteStream,
    *,
    drain: bool = False,
) -> _T:
    """Run the data phase while listening for the peer ending the session;
    the work's result.

    The stream is closed when the work is done, aborted if it failed.
    With ``drain`` (the receiver), a session the peer ends because the
    transfer broke off lets the work first take in what already arrived
    (it is verified and kept for the resume), up to the stream's end.
    """
    task = asyncio.ensure_future(work)
    # The watcher only waits for the end to be *announced*; the
    # session-terminate itself stays in the inbox for whoever reads next.
    watcher = asyncio.ensure_future(session.ending.wait())
    try:
        done, _ = await asyncio.wait(
            {task, watcher}, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            result = task.result()
            with contextlib.suppress(XferError, OSError):
                await stream.close()
            return result
        # The peer went offline (no terminate, and no protocol error):
        # a break too, and its stream fails with it.
        gone = (
            session.terminated is None
            and session.machine.state is not SessionState.ERROR
        )
        if drain and (gone or broke_off(rejection(session.peer, session.terminated))):
            # What is still in flight ends soon: at the stream's end (or
            # its failure, which hands on what came before it).
            await asyncio.wait({task}, timeout=DRAIN_GRACE)
            if task.done() and not task.cancelled() and task.exception() is None:
                # All of it came and verified (the file is in place)
                # before the sender, cut off, heard so: that counts.
                with contextlib.suppress(XferError, OSError):
                    await stream.close()
                return task.result()
        # Ended (or failed) while data flowed: raise what ended it.
        await expect(session, set(), 5.0)
        raise AssertionError("expect() returned for no action")  # pragma: no cover
    except BaseException:
        stream.abort("the transfer failed")
        raise
    finally:
        await settle(task, watcher)


async def settle(*tasks: asyncio.Future[Any]) -> None:
    """Cancel what is still running and let it finish, without swallowing
    a cancellation of our own (the tasks then finish in the background)."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: its failure was handled or superseded


@dataclass(kw_only=True)
class S5B:
    """Our side of a SOCKS5 transport: what we offered, who connected."""

    sid: str
    candidates: list[Candidate]
    incoming: asyncio.Future[TcpConnection] | None

    def take(self) -> asyncio.Future[TcpConnection]:
        """The peer's connection to our streamhost, now the stream's."""
        assert self.incoming is not None
        taken, self.incoming = self.incoming, None
        return taken

    def close(self) -> None:
        """Stop accepting connections to our streamhost for this transport,
        and drop one that came but is not used."""
        if self.incoming is not None:
            if self.incoming.done():
                _abort(self.incoming)
            else:
                self.incoming.cancel()
            self.incoming = None


def _abort(waiter: asyncio.Future[TcpConnection]) -> None:
    if not waiter.cancelled() and waiter.exception() is None:
        waiter.result().abort()
