"""Sharing a folder with the members of a group chat (spec/share.md
section 8): who may ask, kept in step with the room's presence.

The sharer joins the room under a throw-away nick and stays in it while it
shares. Every occupant's presence tells its real JID (if the room shows it
to us); the accounts present, minus ourselves, are the sharer's members
(:meth:`~xfer.xmpp.serving.Sharer.set_members`). A member who leaves is
removed at once, one who joins is added; the sharer still answers only
requests that come inside OTR from a fingerprint it trusts for that
account, so an occupant we do not trust (yet) is refused until we do. A room
that lies about real JIDs can at most make us serve an account whose key we
trust: the OTR fingerprint decides, never the room.

A reconnection that resumes the XMPP session (XEP-0198) keeps us in the
room. One that does not (the server had ended the session: a new session
starts) left the room behind: the room saw us go, so when the old session
ends (``session_end``) nobody is a member any more, and when the new one
starts (``session_start``) we join again under a new nick, trying again
with back-off until it works or the sharer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from typing import TYPE_CHECKING

from slixmpp import JID
from slixmpp.exceptions import PresenceError
from slixmpp.plugins.xep_0045 import XEP_0045

from xfer.errors import NotSecure
from xfer.jid import bare_jid
from xfer.xmpp._slixmpp import plugin
from xfer.xmpp.muc import ANONYMOUS, UNTRUSTED
from xfer.xmpp.serving import ShareEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp import BaseXMPP, Presence

    from xfer.xmpp.serving import Sharer

__all__ = ["REJOIN_DELAYS", "RoomMembers"]

log = logging.getLogger(__name__)

#: Seconds between tries to join the room again after a new session; the
#: last one repeats.
REJOIN_DELAYS = (0.0, 1.0, 3.0, 7.0, 15.0, 30.0)


class RoomMembers:
    """Keeps ``sharer``'s members equal to the accounts present in ``room``.

    ``trusted(jid)``: we trust some fingerprint for that account (only for
    the words reported: the sharer checks the request's own fingerprint).
    ``report`` hears ``member`` (joined and trusted), ``skipped`` (present
    but anonymous or untrusted, with the reason), ``left`` and
    ``rejoined`` (the room, after a new session).
    """

    def __init__(
        self,
        xmpp: BaseXMPP,
        room: str,
        sharer: Sharer,
        trusted: Callable[[str], bool],
        report: Callable[[ShareEvent], object] | None = None,
    ) -> None:
        self.room = bare_jid(room)
        self._xmpp = xmpp
        self._sharer = sharer
        self._trusted = trusted
        self._report = report
        self._nick = f"xfer-{os.urandom(4).hex()}"
        self._mine = bare_jid(str(xmpp.boundjid))
        #: nick -> the bare real JID the room showed, or None (anonymous).
        self.occupants: dict[str, str | None] = {}
        self.joined = False
        #: Joins done, the first included (a rejoin after a new session
        #: adds one).
        self.joins = 0
        self._wanted = False
        self._timeout = 10.0
        self._rejoining: asyncio.Task[None] | None = None

    def _event(self, kind: str, peer: str, detail: str = "") -> None:
        if self._report is not None:
            self._report(ShareEvent(kind=kind, peer=peer, detail=detail))

    async def join(self, timeout: float = 10.0) -> None:
        """Join the room and take its occupants as the members; join it
        again whenever a new XMPP session starts, until :meth:`leave`.

        Raises:
            NotSecure: the room would not let us in.
        """
        self._xmpp.register_plugin("xep_0045")
        self._timeout = timeout
        self._xmpp.add_event_handler(f"muc::{self.room}::presence", self._on_presence)
        self._xmpp.add_event_handler("session_end", self._on_session_end)
        self._xmpp.add_event_handler("session_start", self._on_session_start)
        try:
            await self._enter()
        except NotSecure:
            self._unhook()
            raise
        self._wanted = True

    async def _enter(self) -> None:
        muc = plugin(self._xmpp, "xep_0045", XEP_0045)
        try:
            _own, _subject, others, _history = await muc.join_muc_wait(
                JID(self.room), self._nick, maxstanzas=0, timeout=self._timeout
            )
        except (PresenceError, TimeoutError) as exc:
            raise NotSecure(f"could not join the room {self.room}: {exc}") from None
        self.joined = True
        self.joins += 1
        for presence in others:  # the handler may have seen them already
            self._on_presence(presence)
        self._update()

    def _unhook(self) -> None:
        self._xmpp.del_event_handler(f"muc::{self.room}::presence", self._on_presence)
        self._xmpp.del_event_handler("session_end", self._on_session_end)
        self._xmpp.del_event_handler("session_start", self._on_session_start)

    def _on_session_end(self, _event: object) -> None:
        # The server ended our session (not resumed): the room saw us go.
        # What we knew of its occupants is stale; nobody is a member until
        # we are back in.
        if self._rejoining is not None:
            self._rejoining.cancel()
            self._rejoining = None
        if not self.joined:
            return
        self.joined = False
        for other, jid in sorted(self.occupants.items()):
            self._event("left", self._label(other, jid), "our session ended")
        self.occupants.clear()
        self._update()

    def _on_session_start(self, _event: object) -> None:
        if not self._wanted or self.joined or self._rejoining is not None:
            return
        self._rejoining = asyncio.ensure_future(self._rejoin())

    async def _rejoin(self) -> None:
        try:
            for attempt in itertools.count():
                delay = REJOIN_DELAYS[min(attempt, len(REJOIN_DELAYS) - 1)]
                await asyncio.sleep(delay)
                if not self._wanted or self.joined:
                    return
                # A new nick: the room may still hold the old one for a while.
                self._nick = f"xfer-{os.urandom(4).hex()}"
                try:
                    await self._enter()
                except NotSecure as exc:
                    log.info("rejoining %s: %s", self.room, exc)
                    continue
                self._event("rejoined", self.room, "a new session with the server")
                return
        finally:
            if self._rejoining is asyncio.current_task():
                self._rejoining = None

    def _label(self, nick: str, jid: str | None) -> str:
        return f"{self.room}/{nick}" + (f" ({jid})" if jid else "")

    def _on_presence(self, presence: Presence) -> None:
        nick = str(presence["from"].resource)
        gone = presence["type"] == "unavailable"
        if nick == self._nick:
            if gone and self.joined:  # kicked, or the room went away
                self.joined = False
                for other, jid in sorted(self.occupants.items()):
                    self._event("left", self._label(other, jid), "we left the room")
                self.occupants.clear()
                self._update()
            return
        real = presence["muc"]["jid"]
        jid = bare_jid(str(real)) if real and str(real) else None
        if jid == self._mine:
            return
        before = self.occupants.get(nick, "")
        if gone:
            if nick in self.occupants:
                del self.occupants[nick]
                self._event("left", self._label(nick, jid))
        else:
            self.occupants[nick] = jid
            if before != jid:
                if jid is None:
                    self._event("skipped", self._label(nick, jid), ANONYMOUS)
                elif not self._trusted(jid):
                    self._event("skipped", self._label(nick, jid), UNTRUSTED)
                else:
                    self._event("member", self._label(nick, jid))
        if self.joined:
            self._update()

    def _update(self) -> None:
        self._sharer.set_members(j for j in self.occupants.values() if j is not None)

    async def leave(self) -> None:
        """Leave the room; nobody is a member any more."""
        self._wanted = False
        self._unhook()
        if self._rejoining is not None:
            self._rejoining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rejoining
            self._rejoining = None
        if self.joined:
            self.joined = False
            muc = plugin(self._xmpp, "xep_0045", XEP_0045)
            muc.leave_muc(JID(self.room), self._nick)
        self.occupants.clear()
        self._update()
