"""The transport of one transfer, and waiting on the peer's Jingle actions.

XEP-0260 (Jingle SOCKS5): our candidates (our streamhost, the server's
proxy), the peer's we reach, the nomination and the proxy's activation;
XEP-0261 (Jingle IBB) through transport-replace when no candidate works.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from xfer.aio.addresses import interface_addresses
from xfer.aio.eyeballs import race
from xfer.errors import (
    ConnectionFailed,
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
    XferError,
)
from xfer.framing.socks5 import dst_addr
from xfer.jingle import Action, Role
from xfer.jingle.candidates import (
    MAX_DIRECT,
    MAX_LOCAL_PREFERENCE,
    MAX_PROXIES,
    Candidate,
    CandidateType,
    Nomination,
    connect_order,
    may_connect,
    nominate,
    offer_order,
    parse_ip,
    priority,
)
from xfer.jingle.wire import Content, IBBTransport, Jingle, S5BTransport
from xfer.transfer.policy import broke_off
from xfer.xmpp.jingle import rejection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from xfer.aio.bytestream import ByteStream
    from xfer.aio.tcp import TcpConnection
    from xfer.xmpp.ibb import IBBStream
    from xfer.xmpp.jingle import JingleSessionIO
    from xfer.xmpp.socks5 import Streamhost
    from xfer.xmpp.transfer.context import Settings, Siblings

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
            self._proxies(session.peer)
            if settings.socks5_proxy
            else asyncio.sleep(0, [])
        )
        candidates: list[Candidate] = []
        waiter: asyncio.Future[TcpConnection] | None = None
        try:
            if settings.socks5_direct:
                _, port = await self._siblings.socks5.listen()
                waiter = self._siblings.socks5.expect(address)
                candidates += self._direct(us, port)
            candidates += [
                Candidate(
                    cid=secrets.token_urlsafe(8),
                    host=h,
                    port=p,
                    jid=jid,
                    priority=priority(CandidateType.PROXY, preference),
                    type=CandidateType.PROXY,
                )
                for jid, h, p, preference in await proxies
            ]
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

    def _same_host(self) -> bool:
        """Whether the peer may be on this host: our server is (the XMPP
        connection is over loopback). Only then do we offer, or connect
        to, loopback candidates."""
        if self._settings.loopback is not None:
            return self._settings.loopback
        ip = parse_ip(self._siblings.stream_addresses()[1] or "")
        return ip is not None and ip.is_loopback

    def _direct(self, us: str, port: int) -> list[Candidate]:
        """Our own streamhost's candidates (it listens on ``port``)."""
        settings = self._settings
        hosts: list[tuple[str, int, CandidateType]] = []
        if settings.advertise:
            hosts = [(h, p, CandidateType.DIRECT) for h, p in settings.advertise]
        else:
            if settings.local_addresses:
                near = self._siblings.stream_addresses()[0]
                found = interface_addresses()
                ordered = offer_order(
                    found, toward_server=near, loopback=self._same_host()
                ) or offer_order(found, toward_server=near, loopback=True)
                hosts += [(h, port, CandidateType.DIRECT) for h in ordered]
            hosts += [
                (h, p or port, CandidateType.ASSISTED) for h, p in settings.addresses
            ]
        candidates: list[Candidate] = []
        rank: dict[CandidateType, int] = {}
        for host, p, kind in hosts[:MAX_DIRECT]:
            i = rank[kind] = rank.get(kind, -1) + 1
            candidates.append(
                Candidate(
                    cid=secrets.token_urlsafe(8),
                    host=host,
                    port=p,
                    jid=us,
                    priority=priority(kind, MAX_LOCAL_PREFERENCE - i),
                    type=kind,
                )
            )
        return candidates

    async def _proxies(self, peer: str) -> list[tuple[str, str, int, int]]:
        """The proxies to offer, with their local preference: our server's
        (1), then the peer's server's (0), each list cached by the plugin.

        Our server's answer is waited for (up to its IQ timeout); the peer's
        server's, across servers, for ``candidate_timeout`` only: a slower
        answer is kept for the next offer and this one goes without it.
        """
        socks5 = self._siblings.socks5
        ours, theirs = self._siblings.domain, _domain(peer)
        lists: list[tuple[int, asyncio.Future[list[Streamhost]]]] = [
            (1, asyncio.ensure_future(socks5.discover_proxies(ours)))
        ]
        if theirs and theirs != ours:
            lists.append((0, asyncio.ensure_future(socks5.discover_proxies(theirs))))
        found: dict[tuple[str, str, int], int] = {}
        try:
            for preference, waiting in lists:
                limit = None if preference else self._settings.candidate_timeout
                with contextlib.suppress(XferError, Exception):
                    for proxy in await asyncio.wait_for(waiting, limit):
                        found.setdefault(proxy, preference)
        finally:
            await settle(*(w for _, w in lists))
        return [(j, h, p, pref) for (j, h, p), pref in found.items()][:MAX_PROXIES]

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
                return await self._open_ibb(session, ours, block), "ibb"
            raise NoUsableTransport("IBB is not ours to open")  # pragma: no cover
        assert s5b is not None
        if not isinstance(theirs, S5BTransport) or theirs.sid != ours.sid:
            raise RemoteProtocolError("the peer answered with another transport")
        try:
            stream = await self._socks5(session, ours, s5b, theirs, timeout)
        finally:
            s5b.close()
        if stream is not None:
            return stream
        return await self._fallback(session)

    async def _socks5(
        self,
        session: JingleSessionIO,
        ours: S5BTransport,
        s5b: S5B,
        theirs: S5BTransport,
        timeout: float,
    ) -> tuple[ByteStream, str] | None:
        us, peer = self._siblings.jid, session.peer
        reached, connection = await self._reach(theirs, dst_addr(ours.sid, peer, us))
        try:
            return await self._report_and_nominate(
                session, ours, s5b, reached, connection, timeout
            )
        except BaseException:
            if connection is not None:
                connection.abort()
            raise

    async def _report_and_nominate(
        self,
        session: JingleSessionIO,
        ours: S5BTransport,
        s5b: S5B,
        reached: Candidate | None,
        connection: TcpConnection | None,
        timeout: float,
    ) -> tuple[ByteStream, str] | None:
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
        label = f"socks5-{choice.candidate.type.label}"
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
            ), label
        if connection is not None:
            connection.abort()  # we reached theirs, but ours won
        return await self._take_ours(session, ours.sid, s5b, choice, timeout)

    async def _reach(
        self, theirs: S5BTransport, address: bytes
    ) -> tuple[Candidate | None, TcpConnection | None]:
        """Connect to one of the peer's candidates: best first, staggered
        (happy eyeballs, :func:`xfer.aio.eyeballs.race`), each within
        ``candidate_timeout``; the first to complete its SOCKS5 handshake
        wins and the others are closed."""
        order = connect_order(list(theirs.candidates))
        loopback = self._same_host()
        timeout = self._settings.candidate_timeout

        def attempt(c: Candidate) -> Callable[[], Awaitable[TcpConnection]]:
            return lambda: self._connect(c, address, loopback, timeout)

        outcome = await race(
            [attempt(c) for c in order],
            discard=lambda connection: connection.abort(),
            errors=(OSError, TimeoutError, XferError, ValueError),
        )
        if outcome.winner is None:
            return None, None
        return order[outcome.winner], outcome.result

    async def _connect(
        self, candidate: Candidate, address: bytes, loopback: bool, timeout: float
    ) -> TcpConnection:
        """One candidate: its host resolved, every address checked
        (:func:`~xfer.jingle.candidates.may_connect`), the SOCKS5 handshake
        for ``address`` on the first that answers."""
        async with asyncio.timeout(timeout):
            if parse_ip(candidate.host) is not None:
                hosts = [candidate.host]
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    candidate.host, candidate.port, type=socket.SOCK_STREAM
                )
                hosts = list(dict.fromkeys(str(info[4][0]) for info in infos))
            allowed = [h for h in hosts if may_connect(h, loopback=loopback)]
            if not allowed:
                raise ConnectionFailed(
                    f"candidate {candidate.cid}: no address we may connect to"
                )
            failure: BaseException | None = None
            for host in allowed:
                try:
                    return await self._siblings.socks5.connect(
                        host, candidate.port, address, timeout
                    )
                except (OSError, XferError) as exc:
                    failure = exc
            assert failure is not None
            raise failure

    async def _take_ours(
        self,
        session: JingleSessionIO,
        sid: str,
        s5b: S5B,
        choice: Nomination,
        timeout: float,
    ) -> tuple[ByteStream, str]:
        """The nominated candidate is one we offered: the peer's connection to
        our streamhost, or the proxy, which we connect to and activate."""
        socks5 = self._siblings.socks5
        us, peer = self._siblings.jid, session.peer
        candidate = choice.candidate
        label = f"socks5-{candidate.type.label}"
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
            return socks5.stream(peer, sid, own, candidate.jid), label
        if s5b.incoming is None:
            raise RemoteProtocolError("the peer used a direct candidate we never had")
        try:
            incoming = await asyncio.wait_for(s5b.take(), timeout)
        except TimeoutError:
            raise TransferTimeout("the peer never connected to our candidate") from None
        return socks5.stream(peer, sid, incoming, us), label

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
        return await self._siblings.ibb.open(
            session.peer,
            sid=ibb.sid,
            block_size=size,
            timeout=self._settings.connect_timeout,
        )

    async def await_stream(
        self, session: JingleSessionIO, waiter: asyncio.Future[IBBStream]
    ) -> ByteStream:
        """The IBB stream the peer opens for ``session``, in time."""
        try:
            return await asyncio.wait_for(waiter, self._settings.connect_timeout)
        except TimeoutError:
            raise TransferTimeout(
                f"{session.peer} never opened the IBB stream"
            ) from None


def _domain(jid: str) -> str:
    """The domain of a JID (``user@domain/resource``)."""
    return jid.split("/", 1)[0].rpartition("@")[2]


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
        if drain and broke_off(rejection(session.peer, session.terminated)):
            # What is still in flight ends soon: at the stream's end.
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
