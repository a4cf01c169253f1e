"""OTR messages on their way out, and the bounces that name one of them.

:class:`Outbox` writes each OTR message the engine hands the ``xfer_otr``
plugin (:mod:`xfer.xmpp.otr`) as a ``<message type='chat'/>`` with the
XEP-0380 marker for OTR and the hints that keep it out of archives and
carbons (XEP-0334 ``no-store``/``no-copy``, XEP-0280 ``private``): an OTR
message is useless anywhere but at the one client that holds the session.

Every such message gets an id of our own (random, so nobody who did not see
the message can name it), and the outbox remembers to whom the last
:data:`REMEMBERED` went. A server that cannot deliver a message answers with
it as ``<message type='error'/>``: the same id, from the JID it went to
(RFC 6120 section 8.3). :meth:`Outbox.bounced` believes such an error only
if it names a message of ours by its id, comes from where that message went
(that JID, its bare JID or its domain) and is the first for that id: an
error for a message never sent, from another JID, or a second one for the
same message is ignored. A server that saw the message can still forge its
bounce (it could as well have dropped it); what a bounce may do is
therefore bounded elsewhere: it ends a wait for an answer sooner, and
counts as one failed attempt at most (:mod:`xfer.xmpp.transfer.rejoin`).
"""

from __future__ import annotations

import collections
import logging
import secrets
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from slixmpp import JID

if TYPE_CHECKING:
    from slixmpp import BaseXMPP
    from slixmpp.xmlstream.stanzabase import StanzaBase

__all__ = ["NS_CARBONS", "NS_EME", "NS_HINTS", "NS_OTR", "REMEMBERED", "Outbox"]

log = logging.getLogger(__name__)

NS_EME = "urn:xmpp:eme:0"
NS_OTR = "urn:xmpp:otr:0"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"

#: OTR messages whose bounce is still believed (the latest ones).
REMEMBERED = 512


class Outbox:
    """Writes OTR messages and recognises their bounces (see the module)."""

    def __init__(self, xmpp: BaseXMPP, *, remembered: int = REMEMBERED) -> None:
        self._xmpp = xmpp
        self._remembered = remembered
        #: Message id -> the JID it went to, oldest first.
        self._sent: collections.OrderedDict[str, str] = collections.OrderedDict()

    def send(self, peer: str, body: str) -> None:
        """Send the OTR message ``body`` to ``peer`` (a full or bare JID)."""
        msg = self._xmpp.make_message(mto=peer, mbody=body, mtype="chat")
        msg_id = secrets.token_hex(12)
        msg["id"] = msg_id
        ET.SubElement(msg.xml, f"{{{NS_EME}}}encryption", namespace=NS_OTR, name="OTR")
        ET.SubElement(msg.xml, f"{{{NS_HINTS}}}no-store")
        ET.SubElement(msg.xml, f"{{{NS_HINTS}}}no-copy")
        ET.SubElement(msg.xml, f"{{{NS_CARBONS}}}private")
        self._sent[msg_id] = peer
        while len(self._sent) > self._remembered:
            self._sent.popitem(last=False)
        msg.send()

    def bounced(self, error: StanzaBase) -> tuple[str, str] | None:
        """``(the JID our message went to, the error condition)`` if the
        message error ``error`` is the first bounce of an OTR message of
        ours, from where it went; None for anything else."""
        msg_id = error["id"]
        peer = self._sent.get(msg_id) if msg_id else None
        sender = JID(error["from"])
        if peer is None or sender not in _places(peer):
            log.info("ignored a message error from %s (no message of ours)", sender)
            return None
        del self._sent[msg_id]
        return peer, error["error"]["condition"] or "an error"


def _places(peer: str) -> tuple[JID, JID, JID]:
    """Where a bounce of a message to ``peer`` may come from: that JID,
    its bare JID, its server."""
    jid = JID(peer)
    return jid, JID(jid.bare), JID(jid.domain)
