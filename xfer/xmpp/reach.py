"""Can the peer receive files with xfer, and at which of its resources?

Asked before the OTR key exchange, so that a peer that is offline, or online
with a client that cannot do xfer, is told apart in about two seconds with
the real reason, instead of an AKE that times out after thirty:

* a full JID is asked for its features (XEP-0030); the server answers for a
  resource that is not online;
* a bare JID is looked up in the presence we receive (RFC 6121): its online
  resources are asked for their features, the ones that can do xfer are
  returned; a contact whose presence we are subscribed to and that shows no
  resource within the wait is offline;
* a bare JID whose presence we do not see answers nothing here (``None``):
  the caller goes on with OTR, where the first answer, a message error or
  the lack of both tell.

xfer needs three features of the peer's client; each one missing is named:
xfer's OTR binding for Jingle (``urn:xfer:jingle:otr:1``, which xfer
announces), Jingle (XEP-0166) and Jingle file transfer (XEP-0234). That the
client speaks OTR version 3 is not announced in service discovery (OTR has
no feature); the query answers it.

A server can forge these answers, as it can drop any stanza: the worst it
gains is a refusal to send (spec/threat-model.md), never a file.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0030 import XEP_0030

from xfer.errors import NotSecure, PeerIncapable, PeerOffline
from xfer.jid import strip_resource
from xfer.jingle.files import NS_FILE_TRANSFER
from xfer.jingle.wire import NS_ENCRYPTED, NS_JINGLE
from xfer.xmpp._slixmpp import plugin

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from slixmpp import BaseXMPP

__all__ = ["NEEDED", "Reach", "lacking"]

log = logging.getLogger(__name__)

#: What a peer's client must announce to receive with xfer, and how to name
#: it when it does not.
NEEDED: tuple[tuple[str, str], ...] = (
    (NS_ENCRYPTED, f"xfer's OTR binding for Jingle ({NS_ENCRYPTED})"),
    (NS_JINGLE, "Jingle (XEP-0166)"),
    (NS_FILE_TRANSFER, "Jingle file transfer (XEP-0234)"),
)

#: Stanza errors with which a server answers for an account or resource that
#: is not online (or a domain it cannot reach).
OFFLINE_CONDITIONS = frozenset(
    {
        "service-unavailable",
        "recipient-unavailable",
        "item-not-found",
        "remote-server-not-found",
        "remote-server-timeout",
        "gone",
    }
)


def lacking(features: Iterable[str]) -> tuple[str, ...]:
    """What of :data:`NEEDED` a client announcing ``features`` lacks."""
    have = set(features)
    return tuple(name for feature, name in NEEDED if feature not in have)


@dataclass(frozen=True, slots=True)
class _Answer:
    jid: str
    lacks: tuple[str, ...]
    offline: bool = False
    silent: bool = False


class Reach:
    """Asks where ``peer`` can receive (see the module)."""

    def __init__(self, xmpp: BaseXMPP, *, timeout: Callable[[str], float]) -> None:
        self._xmpp = xmpp
        self._timeout = timeout
        self._roster_asked = False

    async def check(self, peer: str) -> list[str] | None:
        """The full JIDs of ``peer`` that can receive with xfer, the highest
        presence priority first; ``None`` when presence cannot tell.

        Raises:
            PeerOffline: the resource named, or every resource of a contact
                whose presence we see, is offline.
            PeerIncapable: online, but no client of it announces xfer.
            NotSecure: a full JID that did not answer within the wait.
        """
        timeout = self._timeout(peer)
        if "/" in peer:
            answer = await self._ask(peer, timeout)
            if answer.offline:
                raise PeerOffline(f"{peer} is offline")
            if answer.silent:
                raise NotSecure(f"{peer} did not answer within {timeout:g} s")
            if answer.lacks:
                raise PeerIncapable(peer, {peer: answer.lacks})
            return [peer]
        resources = await self._resources(peer, timeout)
        if resources is None:
            return None
        if not resources:
            raise PeerOffline(f"{peer} is offline")
        answers = await asyncio.gather(*(self._ask(r, timeout) for r in resources))
        able = [a.jid for a in answers if not (a.lacks or a.offline or a.silent)]
        if able:
            return able
        lacks = {a.jid: a.lacks for a in answers if a.lacks}
        if lacks:
            raise PeerIncapable(peer, lacks)
        if all(a.offline for a in answers):
            raise PeerOffline(f"{peer} is offline")
        raise NotSecure(f"no client of {peer} answered within {timeout:g} s")

    async def available(self, full: str) -> bool:
        """Whether the full JID ``full`` is online with a client that can
        receive with xfer, by service discovery (no answer within the wait
        is a no). Not authenticated: OTR's fingerprint check still decides."""
        answer = await self._ask(full, self._timeout(full))
        return not (answer.offline or answer.silent or answer.lacks)

    def online(self, bare: str) -> list[str]:
        """The resources of ``bare`` whose presence we saw last as
        available, the highest priority first (stale after our own
        connection dropped: ask :meth:`available`)."""
        return self._online(bare)

    async def _ask(self, full: str, timeout: float) -> _Answer:
        disco = plugin(self._xmpp, "xep_0030", XEP_0030)
        try:
            info = await disco.get_info(jid=JID(full), timeout=timeout)
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            log.info("%s answered service discovery with %s", full, condition)
            return _Answer(full, (), offline=condition in OFFLINE_CONDITIONS)
        except IqTimeout:
            return _Answer(full, (), silent=True)
        features = info["disco_info"]["features"]
        return _Answer(full, lacking(str(f) for f in features))

    async def _resources(self, peer: str, timeout: float) -> list[str] | None:
        """The peer's online resources by priority, ``[]`` if it is a contact
        that stays offline for ``timeout``, ``None`` if we do not see its
        presence."""
        bare = strip_resource(peer)
        found = self._online(bare)
        if found:
            return found
        if not await self._subscribed(bare, timeout):
            return None
        # Just logged in: the server may still be sending the presence of
        # our contacts (a remote one's takes a round trip between servers).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))
            found = self._online(bare)
            if found:
                return found
        return []

    def _online(self, bare: str) -> list[str]:
        roster = self._xmpp.client_roster
        if not roster.has_jid(bare):
            return []
        resources = roster[bare].resources
        ranked = sorted(
            resources.items(), key=lambda item: -int(item[1].get("priority", 0))
        )
        return [f"{bare}/{resource}" for resource, _ in ranked]

    async def _subscribed(self, bare: str, timeout: float) -> bool:
        """Whether the server sends us ``bare``'s presence (our roster says
        subscription ``to`` or ``both``). The roster is read once; it is
        never changed."""
        if not self._roster_asked and isinstance(self._xmpp, ClientXMPP):
            self._roster_asked = True
            try:
                await self._xmpp.get_roster(timeout=timeout)
            except (IqError, IqTimeout):
                log.info("the server did not give us our roster")
        roster = self._xmpp.client_roster
        if not roster.has_jid(bare):
            return False
        return roster[bare]["subscription"] in {"to", "both"}
