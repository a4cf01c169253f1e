"""The transport of one transfer.

XEP-0260 (Jingle SOCKS5): our candidates and the peer's we reach (gathered
and tried by :mod:`.candidates`), the reports, the nomination and the
proxy's activation; XEP-0261 (Jingle IBB) through transport-replace when no
candidate works; the :class:`~.candidates.Route` the data took. Waiting on
the peer's actions is :mod:`.waiting`'s (its names are re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xfer.errors import (
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
    XferError,
)
from xfer.framing.socks5 import dst_addr
from xfer.jingle import Action, Role
from xfer.jingle.candidates import (
    Candidate,
    CandidateType,
    Nomination,
    nominate,
)
from xfer.jingle.wire import Content, IBBTransport, Jingle, S5BTransport
from xfer.xmpp.transfer.candidates import Gatherer, Reached, Route, hostport
from xfer.xmpp.transfer.waiting import (
    DRAIN_GRACE,
    before_end,
    expect,
    expect_transport,
    settle,
    watching,
)

if TYPE_CHECKING:
    from xfer.aio.bytestream import ByteStream
    from xfer.aio.tcp import TcpConnection
    from xfer.xmpp.ibb import IBBStream
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.transfer.context import Settings, Siblings

__all__ = [
    "CONTENT",
    "DRAIN_GRACE",
    "S5B",
    "Negotiator",
    "Report",
    "before_end",
    "carrier",
    "corroborate",
    "expect",
    "expect_transport",
    "peer_report",
    "settle",
    "transport_info",
    "watching",
]

log = logging.getLogger(__name__)

#: The name of the one content of an xfer session.
CONTENT = "file"


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
        # The peer's report is listened for while we try its candidates: once
        # it names one of ours it reached (and, for one of our streamhosts,
        # the connection is there), tries that cannot win stop early.
        report = asyncio.ensure_future(peer_report(session, ours.sid, s5b))
        peer_used = asyncio.get_running_loop().create_future()
        report.add_done_callback(lambda r: corroborate(r, s5b, peer_used))
        try:
            reached = await self._reach(session, theirs, ours.sid, report, peer_used)
            if reached.cut:
                log.info("%s reported first: our other tries stopped", session.peer)
            try:
                got = await self._report_and_nominate(
                    session, ours, s5b, reached, report, timeout
                )
            except BaseException:
                if reached.connection is not None:
                    reached.connection.abort()
                raise
        finally:
            s5b.close()
            peer_used.cancel()
            await settle(report)
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

    async def _reach(
        self,
        session: JingleSessionIO,
        theirs: S5BTransport,
        sid: str,
        report: asyncio.Future[Report],
        peer_used: asyncio.Future[Candidate],
    ) -> Reached:
        """Try the peer's candidates; a report from the peer that ends the
        negotiation (a cid we never offered, the session ended) stops it."""
        us, peer = self._siblings.jid, session.peer
        reach = asyncio.ensure_future(
            self._gatherer.reach(
                theirs,
                dst_addr(sid, peer, us),
                peer_used=peer_used,
                initiator=session.role is Role.INITIATOR,
            )
        )
        waiting: set[asyncio.Future[Any]] = {reach, report}
        try:
            while not reach.done():
                done, _ = await asyncio.wait(
                    waiting, return_when=asyncio.FIRST_COMPLETED
                )
                if report in done:
                    report.result()  # raises what ended the negotiation
                    waiting = {reach}
            return reach.result()
        except BaseException:
            await settle(reach)
            if not reach.cancelled() and reach.exception() is None:
                connection = reach.result().connection
                if connection is not None:
                    connection.abort()
            raise

    async def _report_and_nominate(
        self,
        session: JingleSessionIO,
        ours: S5BTransport,
        s5b: S5B,
        reached: Reached,
        report: asyncio.Future[Report],
        timeout: float,
    ) -> tuple[ByteStream, Candidate] | None:
        """Tell the peer which of its candidates we reached, learn which of
        ours it reached, and take the nominated connection (XEP-0260)."""
        peer = session.peer
        connection = reached.connection
        info = S5BTransport(
            sid=ours.sid,
            candidate_used=reached.candidate.cid if reached.candidate else None,
            candidate_error=reached.candidate is None,
        )
        await session.send(transport_info(session, info))
        try:
            _, peer_used = await asyncio.wait_for(asyncio.shield(report), timeout)
        except TimeoutError:
            raise TransferTimeout(f"{peer} did not report on SOCKS5") from None
        choice = nominate(
            we_used=reached.candidate,
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


# -- the peer's report ---------------------------------------------------------


#: The peer's report on our candidates, and the one it names.
Report = tuple[S5BTransport, Candidate | None]


async def peer_report(session: JingleSessionIO, sid: str, s5b: S5B) -> Report:
    """The peer's candidate-used or candidate-error for transport ``sid``
    (no time limit: the caller sets one).

    Raises:
        RemoteProtocolError: it names a candidate we never offered.
    """
    info = await expect_transport(
        session,
        lambda t: t.sid == sid and (t.candidate_used is not None or t.candidate_error),
        None,
    )
    if info.candidate_used is None:
        return info, None
    used = next((c for c in s5b.candidates if c.cid == info.candidate_used), None)
    if used is None:
        raise RemoteProtocolError("the peer used a candidate we never offered")
    return info, used


def corroborate(
    report: asyncio.Future[Report], s5b: S5B, peer_used: asyncio.Future[Candidate]
) -> None:
    """Once the peer's report names one of our candidates, hand it to
    ``peer_used`` (which gives up our tries that cannot win): a proxy at
    once (only the proxy could tell), one of our own streamhost's once the
    peer's connection to it is there, not on the report's word alone: a
    report forged or sent before the peer connected does not cut our tries
    short."""
    if report.cancelled() or report.exception() is not None:
        return
    used = report.result()[1]
    if used is None:
        return
    if used.type is CandidateType.PROXY:
        if not peer_used.done():
            peer_used.set_result(used)
        return
    incoming = s5b.incoming
    if incoming is None:
        return

    def arrived(connection: asyncio.Future[TcpConnection]) -> None:
        ok = not connection.cancelled() and connection.exception() is None
        if ok and not peer_used.done():
            peer_used.set_result(used)

    incoming.add_done_callback(arrived)


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
