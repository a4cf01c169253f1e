"""The hostile server's own OTR identity: a forged peer that impersonates
a full JID toward the client and records what it decrypts."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from xfer.errors import NotSecure, RemoteProtocolError
from xfer.otr import events as ev
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.otr.session import Policy
from xfer.testing.hostile.stanzas import (
    CLIENT_NS,
    Direction,
    body,
    chat_message,
    jid_matches,
    matching,
)
from xfer.transfer.offer import XFER_USE, TransferOffer

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Callable

    from xfer.otr.session import Session
    from xfer.testing.hostile.server import HostileServer


__all__ = [
    "ForgedEvent",
    "ForgedOTRPeer",
]

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=ev.Event)


# -- a forged OTR peer ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForgedEvent:
    """Something the forger's OTR engine reported."""

    #: The client's full JID (the forger's name for its peer).
    peer: str
    #: The client's instance tag, as its messages named it.
    their_tag: int
    event: ev.Event
    time: float


@dataclass(slots=True)
class _EventWaiter:
    wanted: Callable[[ev.Event], bool]
    future: asyncio.Future[ev.Event] = field(repr=False)


class ForgedOTRPeer:
    """The hostile server's own OTR identity, posing as ``impersonate``.

    It reads the client's OTR messages addressed to ``impersonate`` (its
    full JID, or its bare JID: a query), runs them through an OTR
    :class:`~xfer.otr.account.Account` of its own (its own DSA key and
    instance tag), and injects its answers to the client as messages "from"
    ``impersonate``. With ``swallow`` the client's OTR messages never reach
    the real peer; without, the real peer gets (and answers) them too. With
    ``silence_real_peer`` the real peer's OTR messages to the client are
    dropped.

    Every event it decrypts is kept in :attr:`events`. Call :meth:`close`
    to remove its rules.
    """

    def __init__(
        self,
        server: HostileServer,
        impersonate: str,
        *,
        swallow: bool = True,
        silence_real_peer: bool = False,
        private_key: PrivateKey | None = None,
        instance_tag: int | None = None,
        policy: Policy | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if "/" not in impersonate:
            raise ValueError(f"impersonate a full JID, not {impersonate!r}")
        self.server = server
        self.impersonate = impersonate
        self.swallow = swallow
        self.private_key = private_key or PrivateKey.generate()
        self.instance_tag = instance_tag or 0x100 + secrets.randbelow(0xFFFFFF00)
        self.account = Account(
            self.private_key,
            our_tag=self.instance_tag,
            policy=policy or Policy(require_encryption=True, answer_queries=True),
            random=random,
        )
        #: Every event, in order.
        self.events: list[ForgedEvent] = []
        #: OTR messages from the client it could not use.
        self.errors: list[RemoteProtocolError] = []
        #: How many OTR bodies it read from the client.
        self.heard = 0
        self._peer: str | None = None
        self._waiters: list[_EventWaiter] = []
        self._rules = [server.on_stanza(self._from_client, "to_server")]
        if silence_real_peer:
            self._rules.append(
                server.drop(
                    matching("message", from_=impersonate, body_prefix="?OTR"),
                    "to_client",
                )
            )

    @property
    def fingerprint(self) -> bytes:
        """The forger's OTR fingerprint (what the client sees)."""
        return self.private_key.public.fingerprint

    @property
    def peer(self) -> str:
        """The client's full JID, as the forger addresses it."""
        peer = self._peer or self.server.client_jid
        if peer is None:
            raise RuntimeError("no client has bound a JID through the server yet")
        return peer

    @property
    def session(self) -> Session | None:
        """The forger's encrypted session with the client, if any."""
        return self.account.best(self.peer)

    def close(self) -> None:
        """Remove the forger's rules (its sessions stay as they are)."""
        for rule in self._rules:
            rule.remove()
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.cancel()

    # -- the client's side ---------------------------------------------------

    def _from_client(
        self, _direction: Direction, element: ET.Element
    ) -> list[ET.Element] | None:
        if element.tag != f"{{{CLIENT_NS}}}message":
            return None
        to = element.get("to")
        if not (
            jid_matches(to, self.impersonate)
            or (to is not None and "/" not in to and jid_matches(self.impersonate, to))
        ):
            return None
        text = body(element)
        if text is None or not text.startswith("?OTR"):
            return None
        self._peer = element.get("from") or self.server.client_jid or self._peer
        self.feed(text)
        return [] if self.swallow else None

    def feed(self, text: str) -> list[ev.Event]:
        """Process one OTR body as if the client had sent it to the forger
        (done for every intercepted message); returns the events."""
        self.heard += 1
        try:
            session, events = self.account.receive(self.peer, text)
        except RemoteProtocolError as exc:
            log.info("forged OTR peer: unusable message: %s", exc)
            self.errors.append(exc)
            self._flush()
            return []
        self._flush()
        now = asyncio.get_running_loop().time()
        for event in events:
            self.events.append(ForgedEvent(self.peer, session.their_tag, event, now))
            for waiter in self._waiters:
                if not waiter.future.done() and waiter.wanted(event):
                    waiter.future.set_result(event)
        return events

    def _flush(self) -> None:
        for peer, text in self.account.data_to_send():
            self.server.inject_to_client(chat_message(self.impersonate, peer, text))

    # -- acting ----------------------------------------------------------------

    def start_ake(self) -> None:
        """Send the client a D-H Commit from the forged JID."""
        self.account.session(self.peer).start_ake()
        self._flush()

    def query(self) -> None:
        """Send the client an OTR query (it then starts the AKE)."""
        self.account.session(self.peer).query()
        self._flush()

    def inject_body(self, text: str) -> ET.Element:
        """Send the client any body (a replayed OTR message, say) "from" the
        forged JID; returns the stanza."""
        return self.server.inject_to_client(
            chat_message(self.impersonate, self.peer, text)
        )

    def _secure_session(self) -> Session:
        session = self.session
        if session is None:
            raise NotSecure(f"the forger has no encrypted session with {self.peer}")
        return session

    def send_message(self, text: str) -> None:
        """Send ``text`` encrypted in the forged session.

        Raises:
            NotSecure: no encrypted session with the client.
        """
        self._secure_session().send(text)
        self._flush()

    def send_symmetric_key(self, use: int, data: bytes = b"") -> bytes:
        """Send a TLV 8 for ``use`` with ``data``; returns the extra
        symmetric key (the client derives the same one).

        Raises:
            NotSecure: no encrypted session with the client.
        """
        key = self._secure_session().extra_symmetric_key(use, data)
        self._flush()
        return key

    def send_offer(self, offer: TransferOffer) -> bytes:
        """Send ``offer`` as xfer does (TLV 8, use ``xfer``); returns its key."""
        return self.send_symmetric_key(XFER_USE, offer.encode())

    def end(self) -> None:
        """End the forged private conversation (TLV 1)."""
        for session in self.account.sessions(self.peer):
            session.end()
        self._flush()

    # -- what it learnt ------------------------------------------------------------

    def events_of(self, kind: type[_E]) -> list[_E]:
        """The recorded events of one kind, in order."""
        return [e.event for e in self.events if isinstance(e.event, kind)]

    def symmetric_keys(self, use: int | None = None) -> list[ev.SymmetricKeyReceived]:
        """Every TLV 8 received (only those for ``use``, if given)."""
        return [
            e
            for e in self.events_of(ev.SymmetricKeyReceived)
            if use is None or e.use == use
        ]

    def offers(self) -> list[tuple[TransferOffer, bytes]]:
        """Every well-formed xfer transfer offer received, with its key."""
        out: list[tuple[TransferOffer, bytes]] = []
        for event in self.symmetric_keys(XFER_USE):
            try:
                out.append((TransferOffer.decode(event.data), event.key))
            except RemoteProtocolError:
                continue
        return out

    async def wait_event(
        self,
        kind: type[_E],
        *,
        timeout: float = 10.0,
        where: Callable[[_E], bool] | None = None,
    ) -> _E:
        """The first event of ``kind`` (already received, or the next one)
        for which ``where`` is true.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        for event in self.events_of(kind):
            if where is None or where(event):
                return event
        future: asyncio.Future[ev.Event] = asyncio.get_running_loop().create_future()

        def wanted(event: ev.Event) -> bool:
            return isinstance(event, kind) and (where is None or where(event))

        waiter = _EventWaiter(wanted, future)
        self._waiters.append(waiter)
        try:
            got = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the forger got no {kind.__name__} within {timeout:g} s"
            ) from None
        finally:
            self._waiters.remove(waiter)
        assert isinstance(got, kind)
        return got

    async def secure(self, *, timeout: float = 10.0) -> Session:
        """Wait until the forged AKE is done; the forger's session.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        await self.wait_event(ev.GoneSecure, timeout=timeout)
        return self._secure_session()
