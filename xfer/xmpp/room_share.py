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
"""

from __future__ import annotations

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

__all__ = ["RoomMembers"]


class RoomMembers:
    """Keeps ``sharer``'s members equal to the accounts present in ``room``.

    ``trusted(jid)``: we trust some fingerprint for that account (only for
    the words reported: the sharer checks the request's own fingerprint).
    ``report`` hears ``member`` (joined and trusted), ``skipped`` (present
    but anonymous or untrusted, with the reason) and ``left``.
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

    def _event(self, kind: str, peer: str, detail: str = "") -> None:
        if self._report is not None:
            self._report(ShareEvent(kind=kind, peer=peer, detail=detail))

    async def join(self, timeout: float = 10.0) -> None:
        """Join the room and take its occupants as the members.

        Raises:
            NotSecure: the room would not let us in.
        """
        self._xmpp.register_plugin("xep_0045")
        muc = plugin(self._xmpp, "xep_0045", XEP_0045)
        self._xmpp.add_event_handler(f"muc::{self.room}::presence", self._on_presence)
        try:
            _own, _subject, others, _history = await muc.join_muc_wait(
                JID(self.room), self._nick, maxstanzas=0, timeout=timeout
            )
        except (PresenceError, TimeoutError) as exc:
            self._unhook()
            raise NotSecure(f"could not join the room {self.room}: {exc}") from None
        self.joined = True
        for presence in others:  # the handler may have seen them already
            self._on_presence(presence)
        self._update()

    def _unhook(self) -> None:
        self._xmpp.del_event_handler(f"muc::{self.room}::presence", self._on_presence)

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
        self._unhook()
        if self.joined:
            self.joined = False
            muc = plugin(self._xmpp, "xep_0045", XEP_0045)
            muc.leave_muc(JID(self.room), self._nick)
        self.occupants.clear()
        self._update()
