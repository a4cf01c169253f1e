"""Finding the peer of a broken transfer again, to offer it the rest.

After a break the receiver may be back under the full JID the transfer went
to, under another one (its server restarted and assigned a new resource, or
its client logged in again), or not back yet. :meth:`Finder.where` looks,
until the resume deadline, in this order:

1. the full JID the transfer went to, asked by service discovery
   (XEP-0030): a server answers for a resource that is gone, so a receiver
   back under the same resource is found even when its presence is not
   shared with us; it is asked again at growing intervals (0.5 s, doubling,
   at most :data:`MAX_POLL`);
2. any resource of the same account whose presence comes in as available,
   asked the same way: a receiver waiting for the rest announces itself
   again to the sender after a new log-in, and answers the sender's
   presence, which the search sends to the account (:class:`Reannouncer`);
   or the contact's own presence, if it is shared with us;
3. when neither shows within the wait, the bare JID: the caller's OTR
   query then goes to whichever clients the server delivers it to.

A resource found so is only a place to try. The OTR key exchange with it
must prove the trusted fingerprint (the sender checks it before any offer),
so a resource a server invents, or forges presence and answers for, gets
no offer and no data; one that proved another key is left out of the rest
of the transfer (``excluded``).

:meth:`Finder.bounce` notices at once that a message of ours to the peer
came back as an error (its server is down, or the resource gone), instead
of waiting for an answer that cannot come: while an offer waits for its
answer, and while a session the peer lost is renewed
(:meth:`Finder.renewed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from xfer.errors import NotSecure, PeerOffline
from xfer.jid import strip_resource
from xfer.xmpp.transfer.negotiation import settle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from slixmpp import BaseXMPP
    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.errors import XferError
    from xfer.otr.session import Session
    from xfer.xmpp.reach import Reach
    from xfer.xmpp.transfer.context import Context

__all__ = [
    "MAX_POLL",
    "Finder",
    "Reannouncer",
    "Retry",
    "gave_up",
    "unless_bounced",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest pause between two service discovery requests to the full JID
#: a transfer went to (s).
MAX_POLL = 8.0
#: Presence announcements kept per search; more (a flood) are dropped.
_MAX_SEEN = 16
#: Resources other than the old full JID asked per search, at most.
_MAX_ASKED = 16
#: Full JIDs a receiver answers with its presence per log-in, at most.
_MAX_ANSWERED = 64


@dataclass(kw_only=True)
class Retry:
    """The offers of the rest after a break."""

    #: When the receiver stops waiting for the rest (the event loop's clock).
    deadline: float
    #: Resources that proved an untrusted key: never offered to again.
    excluded: set[str] = dataclasses.field(default_factory=set)
    #: Offers of the rest made so far (at most ``resume_attempts``), and how
    #: often the transfer broke off.
    attempts: int = 0
    breaks: int = 0

    def restart(self, wait: float) -> None:
        """A new break: the receiver waits ``wait`` seconds from now."""
        self.deadline = asyncio.get_running_loop().time() + wait


def gave_up(broken: XferError, attempts: int) -> XferError:
    """``broken``, its message saying how many offers of the rest failed."""
    if attempts:
        plural = "s" if attempts != 1 else ""
        broken.args = (
            f"{broken} (gave up after {attempts} attempt{plural} to resume)",
        )
    return broken


class Finder:
    """Where the peer of a broken transfer can be offered the rest (see
    the module)."""

    def __init__(self, xmpp: BaseXMPP, reach: Reach, context: Context) -> None:
        self._xmpp = xmpp
        self._reach = reach
        self._context = context
        #: Searches (bare JID, resources seen available), queries (bare JID,
        #: resources gone secure) and offers (JID, bounce) under way.
        self._watchers: list[tuple[str, asyncio.Queue[str]]] = []
        self._secured: list[tuple[str, asyncio.Queue[str]]] = []
        self._bounces: list[tuple[str, asyncio.Future[str]]] = []
        xmpp.add_event_handler("presence_available", self._on_available)
        xmpp.add_event_handler("xfer_otr_secure", self._on_secure)
        xmpp.add_event_handler("xfer_otr_bounced", self._on_bounced)

    def _on_secure(self, secure: tuple[str, bytes]) -> None:
        full = secure[0]
        for wanted, secured in self._secured:
            if wanted == strip_resource(full) and not secured.full():
                secured.put_nowait(full)

    def _on_available(self, presence: StanzaBase) -> None:
        full: str = presence["from"].full
        if "/" not in full:
            return
        bare = strip_resource(full)
        for wanted, seen in self._watchers:
            if wanted == bare and not seen.full():
                seen.put_nowait(full)

    def _on_bounced(self, bounce: tuple[str, str]) -> None:
        peer, condition = bounce
        for wanted, waiter in self._bounces:
            if not waiter.done() and wanted in (peer, strip_resource(peer)):
                waiter.set_result(condition)

    @contextlib.contextmanager
    def bounce(self, peer: str) -> Iterator[asyncio.Future[str]]:
        """A future that gets the error condition once a message of ours to
        ``peer`` (or, for a bare JID, to any of its resources) bounces,
        while the ``with`` block runs."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (peer, waiter)
        self._bounces.append(entry)
        try:
            yield waiter
        finally:
            self._bounces.remove(entry)
            waiter.cancel()

    async def renewed(self, full: str, old_ssid: bytes | None) -> Session:
        """A session with ``full`` newer than the one that made
        ``old_ssid`` (the peer restarted and lost it: it could not read our
        offer), as :meth:`xfer.xmpp.otr.XferOTR.renewed` sets it up; a
        bounce of our D-H Commit ends the wait at once.

        Raises:
            PeerOffline: our message to ``full`` bounced.
            NotSecure: no new session within the connect timeout.
        """
        otr = self._context.siblings.otr
        timeout = self._context.settings.connect_timeout
        with self.bounce(full) as bounced:
            return await unless_bounced(
                bounced, full, otr.renewed(full, old_ssid, timeout=timeout)
            )

    async def session_again(
        self, full: str, broken: XferError, retry: Retry
    ) -> tuple[str, Session]:
        """Wait (1, 2, 4... s by default, before each attempt), be online
        again, find the peer (its old full JID, or another resource of the
        account: :meth:`where`) and have a secure OTR session with it, to
        offer the rest of a transfer; never with a resource in
        ``retry.excluded``.

        Raises:
            XferError: ``broken`` if we are not online again by the resume
            deadline; else why this attempt failed (no OTR session, a
            bounce, an untrusted key).
        """
        loop = asyncio.get_running_loop()
        first = self._context.settings.resume_backoff
        pause = min(
            first * 2 ** (retry.attempts - 1), self._context.settings.resume_backoff_max
        )
        await asyncio.sleep(max(min(pause, retry.deadline - loop.time()), 0))
        try:
            await asyncio.wait_for(
                self._context.liveness.online.wait(),
                max(retry.deadline - loop.time(), 0),
            )
        except TimeoutError:
            raise broken from None
        timeout = self._context.settings.connect_timeout
        otr = self._context.siblings.otr
        if full not in retry.excluded and otr.secured(full) is not None:
            # It never went away.
            return await otr.secure(full, timeout=timeout)
        where = await self.where(
            full, until=retry.deadline, wait=timeout, excluded=retry.excluded
        )
        if "/" in where:
            return await otr.secure(where, timeout=timeout)
        # Nobody seen: a query to the account, which its clients answer;
        # one that proved another key before does not count.
        until = loop.time() + timeout
        secured: asyncio.Queue[str] = asyncio.Queue(maxsize=_MAX_SEEN)
        entry = (where, secured)
        self._secured.append(entry)
        try:
            wait = self._context.settings.probe_wait(where, self._context.siblings.jid)
            found, session = await otr.secure(
                where, timeout=timeout, answer_within=wait
            )
            while found in retry.excluded:
                otr.end(found)
                found = await asyncio.wait_for(
                    secured.get(), max(until - loop.time(), 0)
                )
                got = otr.secured(found)
                if got is not None:
                    found, session = got
            return found, session
        except TimeoutError:
            raise NotSecure(
                f"no trusted client of {where} answered within {timeout:g} s"
            ) from None
        finally:
            self._secured.remove(entry)

    async def where(
        self, full: str, *, until: float, wait: float, excluded: set[str]
    ) -> str:
        """The full JID of ``full``'s account to offer the rest to: ``full``
        itself or another resource, once one answers service discovery as a
        client that can receive with xfer; the bare JID if none did within
        ``wait`` seconds (or by ``until``, on the event loop's clock).
        Resources in ``excluded`` are never returned."""
        bare = strip_resource(full)
        loop = asyncio.get_running_loop()
        give_up = min(until, loop.time() + wait)
        seen: asyncio.Queue[str] = asyncio.Queue(maxsize=_MAX_SEEN)
        entry = (bare, seen)
        self._watchers.append(entry)
        # Whichever of us logged in again last: its clients waiting for
        # the rest answer with their presence (:class:`Reannouncer`).
        self._xmpp.send_presence(pto=bare)
        # Other resources asked in this search, at most _MAX_ASKED: a flood
        # of presence in the account's name (its server may forge any) gets
        # that many questions, no more; the old full JID is always asked.
        others: set[str] = set()

        def budget(candidates: Iterable[str]) -> Iterator[str]:
            for candidate in dict.fromkeys(candidates):
                if candidate in excluded or "/" not in candidate:
                    continue
                if candidate != full:
                    if candidate not in others and len(others) >= _MAX_ASKED:
                        continue
                    others.add(candidate)
                yield candidate

        try:
            ask = [full, *self._reach.online(bare)]
            pause = 0.5
            while True:
                for candidate in budget(ask):
                    if await self._reach.available(candidate):
                        return candidate
                left = give_up - loop.time()
                if left <= 0:
                    return bare
                try:
                    ask = [await asyncio.wait_for(seen.get(), min(pause, left))]
                    log.info("%s is available again", ask[0])
                except TimeoutError:
                    # Back under the same resource, unannounced: ask again.
                    ask = [full, *self._reach.online(bare)]
                    pause = min(pause * 2, MAX_POLL)
        finally:
            self._watchers.remove(entry)


async def unless_bounced(
    bounced: asyncio.Future[str], peer: str, waiting: Awaitable[T]
) -> T:
    """``waiting``'s result, unless a message of ours to ``peer`` bounces
    first: then PeerOffline at once, not after the timeout."""
    task = asyncio.ensure_future(waiting)
    watch: set[asyncio.Future[Any]] = {task, bounced}
    try:
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise PeerOffline(f"{peer} is offline (its server answered {bounced.result()})")
    finally:
        await settle(task)


class Reannouncer:
    """The receiver's half: after a new log-in (not a resumed stream), tell
    the accounts whose transfers to us wait for the rest that we are online
    again, and under which full JID (directed presence to each bare JID);
    and answer the presence of such an account's client (a sender looking
    for us, :meth:`Finder.where`) with ours, once per full JID and log-in
    (and to :data:`_MAX_ANSWERED` of them at most).
    Those accounts learned our presence before, when we took their offers;
    nobody else is told anything."""

    def __init__(self, xmpp: BaseXMPP, waiting: Callable[[], Iterable[str]]) -> None:
        self._xmpp = xmpp
        #: The bare JIDs whose transfers to us wait for the rest.
        self._waiting = waiting
        self._answered: set[str] = set()
        xmpp.add_event_handler("session_start", self._on_new_session)
        xmpp.add_event_handler("presence_available", self._on_available)

    def _on_new_session(self, _event: object) -> None:
        self._answered.clear()
        for bare in sorted(set(self._waiting())):
            self._xmpp.send_presence(pto=bare)

    def _on_available(self, presence: StanzaBase) -> None:
        full: str = presence["from"].full
        if "/" not in full or full in self._answered:
            return
        if len(self._answered) >= _MAX_ANSWERED:
            return  # a flood of presence in a sender's name: enough said
        if strip_resource(full) in set(self._waiting()):
            self._answered.add(full)
            self._xmpp.send_presence(pto=full)
