"""XEP-0260 candidates: the ones we offer, and reaching the peer's.

What we offer (``spec/jingle.md`` section 6.2), best first:

1. ``direct``: this host's interface addresses
   (:func:`xfer.aio.addresses.interface_addresses`, ordered and filtered by
   :func:`xfer.jingle.candidates.offer_order`), all on the one port of our
   streamhost, which listens on every address;
2. ``assisted``: the addresses the user added (a port forward);
3. ``proxy``: the SOCKS5 proxies of our server, then those of the peer's
   server (XEP-0065 disco on both domains, cached by ``xfer_socks5``).

The peer's candidates are tried best first and staggered
(:func:`xfer.aio.eyeballs.race`), each within ``candidate_timeout``, and only
at addresses :func:`xfer.jingle.candidates.may_connect` allows. Once the
peer reported the candidate of ours it reached, those of its candidates that
could no longer win (:func:`xfer.jingle.candidates.could_win`) are given up
at once, the others once each has run ``candidate_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.aio.addresses import interface_addresses
from xfer.aio.eyeballs import Cutoff, race
from xfer.errors import ConnectionFailed, XferError
from xfer.jingle.candidates import (
    MAX_DIRECT,
    MAX_LOCAL_PREFERENCE,
    MAX_PROXIES,
    Candidate,
    CandidateType,
    connect_order,
    could_win,
    may_connect,
    offer_order,
    parse_ip,
    priority,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from xfer.aio.tcp import TcpConnection
    from xfer.jingle.wire import S5BTransport
    from xfer.xmpp.socks5 import Streamhost
    from xfer.xmpp.transfer.context import Settings, Siblings

__all__ = ["Gatherer", "Reached", "Route", "hostport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reached:
    """How trying the peer's candidates went."""

    #: The candidate reached and our connection to it, or None.
    candidate: Candidate | None = None
    connection: TcpConnection | None = None
    #: The loop time at which the last candidate failed (none reached).
    failed_at: float | None = None
    #: Whether the tries were given up early, the peer's report in hand.
    cut: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """The path a transfer's data took, for the user."""

    #: ``socks5-direct``, ``socks5-assisted``, ``socks5-proxy`` or ``ibb``.
    kind: str
    #: ``host:port`` of a direct or assisted streamhost, a proxy's JID,
    #: or "" for IBB.
    via: str
    #: Seconds from our last candidate failing to the stream being ready
    #: (None when we reached one).
    after_failure: float | None = None


def hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Gatherer:
    """Our candidates, and the peer's reached."""

    def __init__(self, settings: Settings, siblings: Siblings) -> None:
        self._settings = settings
        self._siblings = siblings

    def same_host(self) -> bool:
        """Whether the peer may be on this host: the ``loopback`` setting,
        or else whether our server is (the XMPP connection is over
        loopback). Only then do we offer, or connect to, loopback."""
        if self._settings.loopback is not None:
            return self._settings.loopback
        ip = parse_ip(self._siblings.stream_addresses()[1] or "")
        return ip is not None and ip.is_loopback

    def direct(self, us: str, port: int) -> list[Candidate]:
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
                    found, toward_server=near, loopback=self.same_host()
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

    async def proxies(self, peer: str) -> list[Candidate]:
        """The proxies to offer: our server's (local preference 1), then the
        peer's server's (0), each list cached by ``xfer_socks5``.

        Our server's answer is waited for (up to its IQ timeout); the peer's
        server's, across servers, for ``candidate_timeout`` only: a later
        answer is kept for the next offer, and this one goes without it.
        """
        socks5 = self._siblings.socks5
        ours, theirs = self._siblings.domain, _domain(peer)
        lists: list[tuple[int, asyncio.Future[list[Streamhost]]]] = [
            (1, asyncio.ensure_future(socks5.discover_proxies(ours)))
        ]
        if theirs and theirs != ours:
            lists.append((0, asyncio.ensure_future(socks5.discover_proxies(theirs))))
        found: dict[Streamhost, int] = {}
        try:
            for preference, waiting in lists:
                limit = None if preference else self._settings.candidate_timeout
                with contextlib.suppress(XferError, Exception):
                    for proxy in await asyncio.wait_for(waiting, limit):
                        found.setdefault(proxy, preference)
        finally:
            for _, waiting in lists:
                waiting.cancel()  # the discovery itself goes on, shielded
            await asyncio.gather(*(w for _, w in lists), return_exceptions=True)
        return [
            Candidate(
                cid=secrets.token_urlsafe(8),
                host=host,
                port=port,
                jid=jid,
                priority=priority(CandidateType.PROXY, preference),
                type=CandidateType.PROXY,
            )
            for (jid, host, port), preference in list(found.items())[:MAX_PROXIES]
        ]

    async def reach(
        self,
        theirs: S5BTransport,
        address: bytes,
        *,
        peer_used: asyncio.Future[Candidate] | None = None,
        initiator: bool = False,
    ) -> Reached:
        """Connect to one of the peer's candidates: best first, staggered
        (happy eyeballs), each within ``candidate_timeout``; the first to
        complete its SOCKS5 handshake for ``address`` wins and the other
        connections are closed.

        Once ``peer_used`` has the candidate of ours the peer reached, the
        tries that could no longer be nominated (``initiator``: our role)
        are given up at once, and the others once each has run
        ``candidate_grace`` seconds (:class:`~xfer.aio.eyeballs.Cutoff`).
        """
        order = connect_order(list(theirs.candidates))
        loopback = self.same_host()
        timeout = self._settings.candidate_timeout
        loop = asyncio.get_running_loop()
        cutoff: asyncio.Future[Cutoff] | None = None
        if peer_used is not None:
            cutoff = loop.create_future()

            def narrow(used: asyncio.Future[Candidate]) -> None:
                assert cutoff is not None
                if used.cancelled() or used.exception() is not None or cutoff.done():
                    return
                pick = used.result()
                keep = frozenset(
                    i
                    for i, c in enumerate(order)
                    if could_win(c, peer_used=pick, we_are_initiator=initiator)
                )
                grace = self._settings.candidate_grace
                cutoff.set_result(Cutoff(keep=keep, grace=grace))

            peer_used.add_done_callback(narrow)

        def attempt(c: Candidate) -> Callable[[], Awaitable[TcpConnection]]:
            return lambda: self._connect(c, address, loopback, timeout)

        try:
            outcome = await race(
                [attempt(c) for c in order],
                discard=lambda connection: connection.abort(),
                errors=(OSError, TimeoutError, XferError, ValueError),
                cutoff=cutoff,
            )
        finally:
            if cutoff is not None:
                assert peer_used is not None
                peer_used.remove_done_callback(narrow)
                cutoff.cancel()
        if outcome.winner is None:
            return Reached(
                failed_at=outcome.last_failure or loop.time(), cut=outcome.cut
            )
        return Reached(candidate=order[outcome.winner], connection=outcome.result)

    async def _connect(
        self, candidate: Candidate, address: bytes, loopback: bool, timeout: float
    ) -> TcpConnection:
        """One candidate: its host resolved, each address checked
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
            failure: OSError | XferError | None = None
            for host in allowed:
                try:
                    return await self._siblings.socks5.connect(
                        host, candidate.port, address, timeout
                    )
                except (OSError, XferError) as exc:
                    failure = exc
            assert failure is not None
            raise failure


def _domain(jid: str) -> str:
    """The domain of a JID (``user@domain/resource``)."""
    return jid.split("/", 1)[0].rpartition("@")[2]
