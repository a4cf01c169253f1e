"""Bringing an OTR session with a peer to ENCRYPTED, for the ``xfer_otr``
plugin (:mod:`xfer.xmpp.otr`), which owns one :class:`Securing` and hands it
what arrives: a session that went secure, a sign of life from a peer (any OTR
message), a message of ours that bounced.

* :meth:`Securing.secure`: a D-H Commit to a full JID, a query to a bare
  one (whose answer names the resource); one key exchange per peer at a
  time, shared by concurrent callers; optionally, the peer must answer at
  all within a short wait, and a bounce ends the wait at once, as does an
  offer of OTR versions other than 3 only (:meth:`Securing.incapable`: its
  client can never go secure with us);
* :meth:`Securing.secured`: the encrypted session to use, a trusted one
  first;
* :meth:`Securing.renewed`: a session newer than one the peer lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from xfer.errors import NotSecure, PeerIncapable, PeerOffline
from xfer.jid import bare_jid, strip_resource
from xfer.otr.ake import AuthState
from xfer.xmpp.versions import LACKS

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.account import Account
    from xfer.otr.session import Session
    from xfer.otr.trust import TrustStore

__all__ = ["Securing"]

log = logging.getLogger(__name__)

#: Said when a bare JID gave no answer: without its presence nobody can tell
#: offline from not running xfer.
_UNSEEN = " (its presence is not shared with you; with it, xfer could tell which)"


class Securing:
    """The OTR set-ups of one account under way, and their waiters."""

    def __init__(
        self,
        *,
        account: Callable[[], Account],
        trust: Callable[[], TrustStore],
        flush: Callable[[], None],
        old_otr: Callable[[str], frozenset[int] | None] = lambda _: None,
    ) -> None:
        # Looked up at each use: the plugin may set a new identity.
        self._account = account
        self._trust = trust
        self._flush = flush
        #: The versions a full JID offered, if it recently offered only
        #: versions other than 3 (:meth:`xfer.xmpp.versions.OldClients.known`).
        self._old_otr = old_otr
        #: Callers waiting for a session with a peer (full or bare JID).
        self._secure_waiters: list[tuple[str, asyncio.Future[Session]]] = []
        #: Callers waiting to hear anything from a peer: its first OTR
        #: message, or a bounce (PeerOffline) of ours.
        self._listeners: list[tuple[str, asyncio.Future[None]]] = []
        #: The set-up under way per peer, shared by concurrent callers.
        self._securing: dict[str, asyncio.Future[tuple[str, Session]]] = {}

    # -- what the plugin hands us ----------------------------------------------

    def went_secure(self, peer: str, session: Session) -> None:
        """``session`` with the full JID ``peer`` is now ENCRYPTED."""
        for want, waiter in list(self._secure_waiters):
            if not waiter.done() and want in (peer, bare_jid(peer)):
                waiter.set_result(session)

    def heard(self, peer: str) -> None:
        """An OTR message came from the full JID ``peer``: it is there."""
        self._tell(peer, None)

    def bounced(self, peer: str, condition: str) -> None:
        """A message of ours to ``peer`` came back as an error: the server
        could not deliver it (the peer is offline, or its domain unreachable)."""
        log.info("a message to %s bounced: %s", peer, condition)
        self._tell(
            peer, PeerOffline(f"{peer} is offline (its server answered {condition})")
        )

    def incapable(self, peer: str) -> None:
        """The full JID ``peer`` offered OTR in versions other than 3 only:
        whoever waits for a session with it (or with its bare JID) fails now,
        instead of at the timeout."""
        for want, waiter in list(self._secure_waiters):
            if not waiter.done() and want in (peer, strip_resource(peer)):
                waiter.set_exception(_incapable(want, peer))

    def _tell(self, peer: str, error: PeerOffline | None) -> None:
        bare = strip_resource(peer)
        for wanted, heard in self._listeners:
            if heard.done() or wanted not in (peer, bare):
                continue
            if error is None:
                heard.set_result(None)
            else:
                heard.set_exception(error)

    # -- what callers ask -----------------------------------------------------------

    async def secure(
        self, peer: str, *, timeout: float = 30, answer_within: float | None = None
    ) -> tuple[str, Session]:
        """An encrypted session with ``peer``: (its full JID, the session).

        A full JID gets a D-H Commit; a bare JID gets a query, which the
        server delivers to one of its clients, and that client's answer
        names the full JID. With ``answer_within``, the peer must send some
        OTR message within that many seconds (the rest of the AKE then has
        ``timeout``); a bounce of our message ends the wait at once.

        Raises:
            PeerOffline: our message bounced.
            PeerIncapable: the peer offered only OTR versions other than 3,
                recently (a full JID) or while we wait.
            NotSecure: no answer within ``answer_within`` seconds, or no
                session within ``timeout`` seconds.
        """
        found = self.secured(peer)
        if found is not None:
            return found
        if self._old_otr(peer) is not None:
            raise _incapable(peer, peer)
        # One AKE per peer at a time: concurrent callers share it (a second
        # D-H Commit would restart the first).
        pending = self._securing.get(peer)
        if pending is None:
            pending = asyncio.ensure_future(
                self._start_secure(peer, timeout, answer_within)
            )
            self._securing[peer] = pending
            pending.add_done_callback(lambda _: self._securing.pop(peer, None))
        return await asyncio.shield(pending)

    async def _start_secure(
        self, peer: str, timeout: float, answer_within: float | None
    ) -> tuple[str, Session]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Session] = loop.create_future()
        heard: asyncio.Future[None] = loop.create_future()
        entry = (peer, waiter)
        listener = (peer, heard)
        self._secure_waiters.append(entry)
        self._listeners.append(listener)
        try:
            # If an AKE with the peer is under way, give it a chance first:
            # a commit of ours now would pull its other half away. (One that
            # stalled, its peer gone, is then restarted.)
            if self.ake_under_way(peer):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), timeout / 3)
            if not waiter.done():
                if "/" in peer:
                    self._account().session(peer).start_ake()
                else:
                    self._account().session(peer).query()
                self._flush()
            session = await self._until_secure(
                peer, waiter, heard, timeout, answer_within
            )
        finally:
            self._secure_waiters.remove(entry)
            self._listeners.remove(listener)
            if heard.done() and not heard.cancelled():
                heard.exception()  # retrieved: a late bounce is no news
        for full, s in self._account().secure_sessions():
            if s is session:
                return full, session
        raise NotSecure(f"lost the OTR session with {peer}")  # pragma: no cover

    async def _until_secure(
        self,
        peer: str,
        waiter: asyncio.Future[Session],
        heard: asyncio.Future[None],
        timeout: float,
        answer_within: float | None,
    ) -> Session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = deadline if answer_within is None else loop.time() + answer_within
        while not waiter.done():
            limit = deadline if heard.done() else min(first, deadline)
            watch: set[asyncio.Future[Any]] = {waiter}
            if not heard.done():
                watch.add(heard)
            await asyncio.wait(
                watch,
                timeout=max(limit - loop.time(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if waiter.done():
                break
            bounce = heard.exception() if heard.done() else None
            if bounce is not None:
                raise bounce
            if loop.time() >= deadline:
                raise NotSecure(
                    f"{peer} did not set up a private (OTR) conversation "
                    f"within {timeout:g} s"
                )
            if not heard.done() and loop.time() >= first:
                raise NotSecure(
                    f"no answer from {peer} within {answer_within:g} s: it is "
                    "offline, or no client of it runs xfer"
                    + ("" if "/" in peer else _UNSEEN)
                )
        return waiter.result()

    def secured(self, peer: str) -> tuple[str, Session] | None:
        """The encrypted session with ``peer`` (a full JID, or any resource
        of a bare one) that went secure last, one with a trusted fingerprint
        first: an instance made in the peer's name by someone else (with
        another key) must not stand in the way of the real one."""
        found = [
            (full, s)
            for full, s in self._account().secure_sessions()
            if full == peer or ("/" not in peer and bare_jid(full) == peer)
        ]
        for full, s in found:
            fingerprint = s.their_fingerprint
            if fingerprint is not None and self._trust().is_trusted(full, fingerprint):
                return full, s
        return found[0] if found else None

    def ake_under_way(self, peer: str) -> bool:
        """Whether a key exchange with ``peer`` is half done."""
        return any(
            s.ake.state is not AuthState.NONE for s in self._account().sessions(peer)
        )

    async def renewed(
        self, peer: str, old_ssid: bytes | None, *, timeout: float = 30
    ) -> Session:
        """An encrypted session with the full JID ``peer`` whose AKE is newer
        than the one that made ``old_ssid`` (the peer lost that one and
        starts a new AKE; wait for it, or start one).

        Raises:
            NotSecure: none within ``timeout``.
        """
        current = self.secured(peer)
        if current is not None and current[1].ssid != old_ssid:
            return current[1]
        if not self.ake_under_way(peer):
            self._account().session(peer).start_ake()
            self._flush()
        waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        entry = (peer, waiter)
        self._secure_waiters.append(entry)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise NotSecure(f"{peer} did not renew the OTR session") from None
        finally:
            self._secure_waiters.remove(entry)


def _incapable(wanted: str, peer: str) -> PeerIncapable:
    return PeerIncapable(wanted, {peer: (LACKS,)})
