"""Group chats (XEP-0045): who in a room can get a file, and who not, why.

xfer sends to a room's occupants one by one, over pairwise OTR
(``spec/otr.md`` 5.6): nothing is ever posted to the room. To learn who is
there, it joins the room under a throw-away nick, reads the occupants'
presence (``<x xmlns='http://jabber.org/protocol/muc#user'><item
jid=.../>``), and leaves. An occupant is a recipient only if

* the room shows its real JID (a non-anonymous room; or a semi-anonymous
  one where we are a moderator): an anonymous occupant cannot be reached
  under OTR with a key we could check;
* that JID is not ours (our other clients in the room are skipped);
* we trust a fingerprint for that JID. This is a first sieve only: the
  transfer itself checks the fingerprint the peer proves in OTR, as for
  any recipient. A room (or its server) that lies about real JIDs can make
  us *offer* to a JID we trust; the offer goes inside OTR to whoever holds
  a key we trust for that JID, never to another key.

Every occupant not sent to is listed with the reason.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.plugins.xep_0030 import XEP_0030
from slixmpp.plugins.xep_0045 import XEP_0045

from xfer.errors import LocalProtocolError, NotSecure
from xfer.jid import bare_jid
from xfer.xmpp._slixmpp import plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp import BaseXMPP

__all__ = [
    "ANONYMOUS",
    "NS_MUC",
    "Occupant",
    "RoomView",
    "is_room",
    "look_into",
    "recipients",
]

NS_MUC = "http://jabber.org/protocol/muc"
#: Why an occupant without a real JID is skipped.
ANONYMOUS = (
    "anonymous: the room does not show its real JID to us (an anonymous or "
    "semi-anonymous room where we are not a moderator), so its key cannot "
    "be checked"
)
UNTRUSTED = "untrusted: no trusted fingerprint for its real JID ('xfer trust')"


@dataclass(frozen=True, slots=True)
class Occupant:
    """One occupant as the room showed it."""

    nick: str
    #: The bare real JID the room showed, or None (anonymous to us).
    jid: str | None
    role: str = "participant"


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room's occupants, as seen when we joined (ourselves left out)."""

    room: str
    occupants: tuple[Occupant, ...] = ()
    #: Our role in the room ("moderator" sees real JIDs in a
    #: semi-anonymous room).
    our_role: str = "participant"
    #: The room said it shows real JIDs to everyone (status code 100/172).
    non_anonymous: bool = False


@dataclass(slots=True)
class _Known:
    """What one client learnt by service discovery, for the process."""

    #: Domain -> whether it is a XEP-0045 service.
    services: dict[str, bool] = field(default_factory=dict)
    #: Bare JIDs found to be rooms (a "no" is not kept: a room may be
    #: made later under a name that was free).
    rooms: set[str] = field(default_factory=set)


_KNOWN: weakref.WeakKeyDictionary[BaseXMPP, _Known] = weakref.WeakKeyDictionary()


async def is_room(xmpp: BaseXMPP, jid: str, timeout: float = 10.0) -> bool:
    """Whether ``jid`` (a bare JID) is a group chat room: its domain is a
    XEP-0045 service (service discovery), and the JID itself says it is a
    room. A full JID is never a room (no query). What a domain is, and
    which JIDs are rooms, is kept for the client's life: an account's
    domain is asked about once, then no more queries for its accounts."""
    if "@" not in jid or "/" in jid:
        return False
    known = _KNOWN.setdefault(xmpp, _Known())
    room = bare_jid(jid)
    if room in known.rooms:
        return True
    disco = plugin(xmpp, "xep_0030", XEP_0030)
    domain = JID(room).domain
    service = known.services.get(domain)
    if service is None:
        try:
            info = await disco.get_info(jid=JID(domain), timeout=timeout)
        except IqError:  # an answer: no service discovery, so no rooms
            known.services[domain] = False
            return False
        except IqTimeout:  # no answer: nothing learnt
            return False
        service = known.services[domain] = NS_MUC in info["disco_info"]["features"]
    if not service:
        return False
    try:
        info = await disco.get_info(jid=JID(room), timeout=timeout)
    except (IqError, IqTimeout):
        return False
    identities = info["disco_info"]["identities"]
    found = any(category == "conference" for category, *_ in identities)
    if found:
        known.rooms.add(room)
    return found


async def look_into(
    xmpp: BaseXMPP, room: str, *, nick: str | None = None, timeout: float = 10.0
) -> RoomView:
    """Join ``room`` (as ``nick``, by default a random one), read who is
    there, leave. Our own occupant and our other clients are left out.

    Raises:
        NotSecure: we could not join (the room refused us, or no answer).
    """
    xmpp.register_plugin("xep_0045")  # once: a second call changes nothing
    muc = plugin(xmpp, "xep_0045", XEP_0045)
    me = nick or f"xfer-{os.urandom(4).hex()}"
    room_jid = JID(bare_jid(room))
    try:
        own, _subject, others, _history = await muc.join_muc_wait(
            room_jid, me, maxstanzas=0, timeout=timeout
        )
    except (PresenceError, TimeoutError) as exc:
        raise NotSecure(f"could not join the room {room}: {exc}") from None
    try:
        mine = bare_jid(str(xmpp.boundjid))
        codes = own["muc"]["status_codes"]
        occupants: list[Occupant] = []
        for presence in others:
            item = presence["muc"]
            name = str(presence["from"].resource)
            if name == me:
                continue
            real = item["jid"]
            jid = bare_jid(str(real)) if real and str(real) else None
            if jid == mine:
                continue
            occupants.append(Occupant(name, jid, str(item["role"] or "participant")))
        return RoomView(
            room=str(room_jid),
            occupants=tuple(occupants),
            our_role=str(own["muc"]["role"] or "participant"),
            non_anonymous=bool({100, 172} & set(codes)),
        )
    finally:
        muc.leave_muc(room_jid, me)
        await asyncio.sleep(0)


def recipients(
    view: RoomView, trusted: Callable[[str], bool]
) -> tuple[list[str], dict[str, str]]:
    """The real JIDs to send to (``trusted(jid)``: we trust a fingerprint
    for it), and every other occupant (by nick, with its real JID if shown)
    with the reason it is skipped.

    Raises:
        LocalProtocolError: the room holds nobody but us.
    """
    if not view.occupants:
        raise LocalProtocolError(f"nobody else is in the room {view.room}")
    send: list[str] = []
    skipped: dict[str, str] = {}
    for occupant in view.occupants:
        label = f"{view.room}/{occupant.nick}"
        if occupant.jid is None:
            skipped[label] = ANONYMOUS
        elif not trusted(occupant.jid):
            skipped[f"{label} ({occupant.jid})"] = UNTRUSTED
        elif occupant.jid not in send:
            send.append(occupant.jid)
    return send, skipped
