"""Jingle (XEP-0166) on slixmpp: the ``xfer_xep_0166`` plugin.

It moves ``<jingle/>`` payloads between IQs and :class:`JingleSessionIO`
objects, one per (peer, sid), and enforces the sans-I/O rules on the way:
every incoming request is parsed by :func:`xfer.jingle.wire.parse` and
checked by :class:`xfer.jingle.JingleSession` *before* it is acknowledged,
so a malformed or out-of-order request gets the IQ error XEP-0166 names
(``bad-request``, ``out-of-order``, ``unknown-session``, ``tie-break``) and
never reaches the application. A valid one is acknowledged at once and
queued for the application (XEP-0166: acknowledge first, answer later).

Applications register for ``session-initiate`` with :attr:`on_initiate`;
without one, offers are answered with ``unsupported-applications``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, ClassVar

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.base import BasePlugin
from slixmpp.stanza import Iq
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xfer.errors import (
    PeerGone,
    RemoteProtocolError,
    TransferDeclined,
    TransferRejected,
    TransferTimeout,
    XferError,
)
from xfer.jid import strip_resource
from xfer.jingle import Action, JingleError, JingleSession, Reason, Role, SessionState
from xfer.jingle.wire import NS_JINGLE, NS_JINGLE_ERRORS, Jingle, build, parse
from xfer.xmpp._slixmpp import (
    DirectedPresence,
    ack,
    error_reply,
    is_connected,
    send_iq,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

__all__ = ["JingleSessionIO", "PeerGone", "XferJingle", "rejection"]

log = logging.getLogger(__name__)

#: Live sessions per account; an offer flood beyond it is refused.
MAX_SESSIONS = 256
#: Seconds :meth:`JingleSessionIO.terminate` waits for the acknowledgement
#: before it returns, and seconds it is awaited in all (in the background).
TERMINATE_WAIT = 1.0
TERMINATE_TIMEOUT = 10.0
#: Session-terminates whose acknowledgement is still awaited.
_ENDING: set[asyncio.Future[None]] = set()


def _ended(ending: asyncio.Future[None]) -> None:
    """A session-terminate was answered, refused or never answered: all
    the same (the session is over)."""
    _ENDING.discard(ending)
    if not ending.cancelled() and not isinstance(ending.exception(), XferError):
        ending.result()  # not an XferError: a bug, raised to the loop's handler


def rejection(peer: str, jingle: Jingle | None) -> TransferRejected:
    """The error for a session the peer ended with ``jingle``'s reason."""
    reason = Reason.GENERAL_ERROR.value
    text = None
    if jingle is not None:
        reason = jingle.reason.value if jingle.reason else reason
        text = jingle.reason_text
    detail = f" ({text})" if text else ""
    if reason == Reason.DECLINE.value:
        return TransferDeclined(
            f"{peer} declined the file{detail}", reason=reason, text=text
        )
    return TransferRejected(
        f"{peer} ended the transfer: {reason}{detail}", reason=reason, text=text
    )


class JingleSessionIO:
    """One Jingle session: send actions, await the peer's."""

    def __init__(self, plugin: XferJingle, *, peer: str, sid: str, role: Role) -> None:
        self.plugin = plugin
        self.peer = peer
        self.sid = sid
        self.machine = JingleSession(sid=sid, role=role)
        self._inbox: asyncio.Queue[Jingle | XferError] = asyncio.Queue(maxsize=64)
        #: Set when the session-terminate (or a failure) is waiting in the
        #: inbox: lets a data phase watch for the end without taking it.
        self.ending = asyncio.Event()
        #: The peer's session-terminate, once it came.
        self.terminated: Jingle | None = None

    @property
    def role(self) -> Role:
        return self.machine.role

    @property
    def ended(self) -> bool:
        return self.machine.state is SessionState.ENDED

    async def send(self, jingle: Jingle, *, timeout: float = 30) -> None:
        """Send one action and wait for the peer's acknowledgement.

        Raises:
            RemoteProtocolError: the peer answered with an error.
            TransferTimeout: no answer. LocalProtocolError: not allowed now.
        """
        if self.ended:
            # The peer ended it while we were busy: say why, not "you called
            # it wrong" (the session machine would refuse the action).
            raise rejection(self.peer, self.terminated)
        content = jingle.content.name if jingle.content else None
        self.machine.send(jingle.action, content=content)
        if jingle.action is Action.SESSION_TERMINATE:
            self.plugin.forget(self)
        iq = self.plugin.xmpp.make_iq_set(ito=self.peer)
        iq.xml.append(build(jingle))
        try:
            await send_iq(iq, timeout)
        except IqError as exc:
            if self.terminated is not None:
                # The peer ended the session while our request crossed its
                # terminate (its "unknown-session" says only that): its
                # reason is the news, and may be worth going on from.
                raise rejection(self.peer, self.terminated) from None
            if exc.iq.xml.find(f".//{{{NS_JINGLE_ERRORS}}}unknown-session") is not None:
                # The peer lost the session without ending it (its connection
                # dropped, or it restarted): a break, after which it may
                # offer the rest again.
                raise PeerGone(
                    f"{self.peer} no longer knows session {self.sid}"
                ) from None
            condition = exc.iq["error"]["condition"]
            raise RemoteProtocolError(
                f"{self.peer} refused {jingle.action.value}: {condition}"
            ) from None
        except IqTimeout:
            raise TransferTimeout(
                f"{self.peer} did not acknowledge {jingle.action.value}"
            ) from None

    def jingle(self, action: Action, **fields: object) -> Jingle:
        """A :class:`Jingle` of this session."""
        return Jingle(action=action, sid=self.sid, **fields)  # type: ignore[arg-type]

    async def terminate(
        self, reason: Reason, text: str | None = None, *, wait: float = TERMINATE_WAIT
    ) -> None:
        """End the session with ``reason`` (quietly if it already ended).

        The session-terminate goes out at once; its acknowledgement is
        awaited ``wait`` seconds at most, then in the background (up to
        :data:`TERMINATE_TIMEOUT`): the session is over either way
        (XEP-0166), and a caller that gives up on a stalled link must not
        wait for an answer that cannot come over it."""
        if self.ended:
            return
        if not is_connected(self.plugin.xmpp):  # offline: nobody to tell
            self.plugin.forget(self)
            return
        ending = asyncio.ensure_future(
            self.send(
                self.jingle(Action.SESSION_TERMINATE, reason=reason, reason_text=text),
                timeout=TERMINATE_TIMEOUT,
            )
        )
        _ENDING.add(ending)
        ending.add_done_callback(_ended)
        await asyncio.wait({ending}, timeout=wait)
        self.plugin.forget(self)

    async def next(self, timeout: float | None = None) -> Jingle:
        """The peer's next action (already acknowledged).

        Raises:
            PeerGone: the peer went offline. JingleError: the peer broke the
            protocol (the session is in ERROR; terminate it).
            TransferTimeout: nothing within ``timeout`` seconds.
        """
        try:
            item = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            raise TransferTimeout(
                f"{self.peer} sent nothing for {timeout:g} s in session {self.sid}"
            ) from None
        if isinstance(item, XferError):
            raise item
        return item

    def _deliver(self, item: Jingle | XferError) -> None:
        if isinstance(item, XferError) or item.action is Action.SESSION_TERMINATE:
            self.ending.set()
            if not isinstance(item, XferError):
                self.terminated = item
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            # The application stopped listening; a flood cannot grow memory.
            self.machine.state = SessionState.ERROR
            self.ending.set()


class XferJingle(BasePlugin):
    """``client.register_plugin("xfer_xep_0166", module=xfer.xmpp.jingle)``."""

    name = "xfer_xep_0166"
    description = "XEP-0166: Jingle (xfer)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {"max_sessions": MAX_SESSIONS}

    def plugin_init(self) -> None:
        self._sessions: dict[tuple[str, str], JingleSessionIO] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._presence = DirectedPresence(self.xmpp)
        #: Called with (session, session-initiate) for each new offer.
        self.on_initiate: Callable[[JingleSessionIO, Jingle], None] | None = None
        self.xmpp.register_handler(
            Callback(
                "xfer_xep_0166",
                MatchXPath(f"{{jabber:client}}iq/{{{NS_JINGLE}}}jingle"),
                self._on_iq,
            )
        )
        self.xmpp.add_event_handler("presence_unavailable", self._on_peer_gone)
        self.xmpp.add_event_handler("disconnected", self._on_disconnected)
        # A new server session (not a resumed one) forgot our directed presence.
        self.xmpp.add_event_handler("session_start", self._on_new_session)

    def plugin_end(self) -> None:
        self.xmpp.remove_handler("xfer_xep_0166")

    def initiate(self, peer: str, *, sid: str | None = None) -> JingleSessionIO:
        """A new session as initiator (send its session-initiate next)."""
        session = JingleSessionIO(
            self, peer=peer, sid=sid or secrets.token_urlsafe(12), role=Role.INITIATOR
        )
        self._sessions[peer, session.sid] = session
        self.announce(peer)
        return session

    def announce(self, peer: str) -> None:
        """Directed presence: the server then tells the peer if we go offline
        (RFC 6121 section 4.6), so its sessions with us fail at once.

        Sent for the sessions we start, and for those the peer starts only
        once the application has vetted the offer: a stranger's
        session-initiate must not tell it that we are online."""
        self._presence.announce(peer)

    def forget(self, session: JingleSessionIO) -> None:
        if self._sessions.get((session.peer, session.sid)) is session:
            del self._sessions[session.peer, session.sid]

    @property
    def live(self) -> int:
        return len(self._sessions)

    def offered_by(self, bare: str) -> int:
        """Sessions that the account ``bare`` (any resource) started with us
        and that are still going."""
        return sum(
            1
            for (peer, _), session in self._sessions.items()
            if session.role is Role.RESPONDER
            and not session.ended
            and strip_resource(peer) == bare
        )

    # -- incoming ----------------------------------------------------------------

    def _on_iq(self, stanza: StanzaBase) -> None:
        assert isinstance(stanza, Iq)
        if stanza["type"] == "get":
            self._error(
                stanza,
                JingleError(
                    "Jingle requests are sets",
                    condition="bad-request",
                    jingle_condition=None,
                ),
            )
            return
        if stanza["type"] != "set":
            return
        el = stanza.xml.find(f"{{{NS_JINGLE}}}jingle")
        assert el is not None
        peer = stanza["from"].full
        try:
            jingle = parse(el)
            session = self._route(peer, jingle)
        except JingleError as exc:
            self._error(stanza, exc)
            return
        ack(stanza)
        if jingle.action is Action.SESSION_INITIATE:
            if self.on_initiate is None:
                task = asyncio.ensure_future(
                    session.terminate(Reason.UNSUPPORTED_APPLICATIONS)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self.on_initiate(session, jingle)
        else:
            if jingle.action is Action.SESSION_TERMINATE:
                self.forget(session)
            session._deliver(jingle)

    def _route(self, peer: str, jingle: Jingle) -> JingleSessionIO:
        key = (peer, jingle.sid)
        content = jingle.content.name if jingle.content else None
        if jingle.action is Action.SESSION_INITIATE:
            if key in self._sessions:
                raise JingleError(
                    "a session with this sid exists",
                    condition="conflict",
                    jingle_condition=None,
                )
            if len(self._sessions) >= self.config["max_sessions"]:
                raise JingleError(
                    "too many sessions",
                    condition="resource-constraint",
                    jingle_condition=None,
                )
            session = JingleSessionIO(
                self, peer=peer, sid=jingle.sid, role=Role.RESPONDER
            )
            session.machine.receive(jingle.action, content=content)
            self._sessions[key] = session
            return session
        found = self._sessions.get(key)
        if found is None:
            raise JingleError(
                f"no session {jingle.sid!r} with {peer}",
                condition="item-not-found",
                jingle_condition="unknown-session",
            )
        try:
            found.machine.receive(jingle.action, content=content)
        except JingleError as exc:
            if found.machine.state is SessionState.ERROR:
                found._deliver(exc)
            raise
        return found

    def _error(self, iq: Iq, exc: JingleError) -> None:
        etype = {
            "bad-request": "modify",
            "resource-constraint": "wait",
        }.get(exc.condition, "cancel")
        detail = None
        if exc.jingle_condition is not None:
            detail = ET.Element(f"{{{NS_JINGLE_ERRORS}}}{exc.jingle_condition}")
        error_reply(iq, exc.condition, etype, detail=detail)

    def _on_peer_gone(self, presence: StanzaBase) -> None:
        gone = presence["from"].full
        for session in list(self._sessions.values()):
            if session.peer == gone:
                session._deliver(PeerGone(f"{gone} went offline"))

    def _on_new_session(self, _event: object) -> None:
        self._presence.clear()

    def _on_disconnected(self, _event: object) -> None:
        for session in list(self._sessions.values()):
            session._deliver(PeerGone("the connection to the XMPP server closed"))


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_xep_0166 = XferJingle
