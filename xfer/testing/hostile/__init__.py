"""A hostile XMPP server for tests: a stanza-level man in the middle on loopback.

The threat model of xfer includes the XMPP server of either party. Such a
server sees every stanza, and may drop, delay, reorder, rewrite or forge any
of them, in both directions, including messages "from" any JID.
:class:`HostileServer` plays that server in front of a real Prosody. It
stands between one client and Prosody's c2s port, splits both byte streams
into top-level elements (the children of ``<stream:stream>``) and lets a
test decide, per stanza, what goes on:

* :meth:`HostileServer.drop`, :meth:`~HostileServer.delay`,
  :meth:`~HostileServer.hold` (then :meth:`Hold.release`, in any order),
  :meth:`~HostileServer.rewrite`, or any :meth:`~HostileServer.on_stanza`
  hook that returns the elements to send instead;
* :meth:`HostileServer.inject_to_client` and
  :meth:`~HostileServer.inject_to_server` send the server's own stanzas;
* every element read from either side is logged with a timestamp
  (:meth:`HostileServer.seen`), and so is every element written
  (:meth:`HostileServer.delivered`); :meth:`HostileServer.wait_for` waits
  for one.

Stream negotiation passes through (TLS must be off: ``tls="none"``). An
element that no rule touches goes on as the very bytes it came in; one that
a rule replaced, and every injected one, is serialized again with explicit
namespace declarations. Stream management (XEP-0198) counts stanzas, which
injecting and dropping would break, so by default the server's
``<sm xmlns='urn:xmpp:sm:3'/>`` feature is removed and the client never
enables it (a hostile server may do that; ``strip_sm=False`` keeps it).

:class:`ForgedOTRPeer` is the server's own OTR identity impersonating a full
JID toward the client: it answers (or starts) the AKE with its own key and
instance tag, and records everything it decrypts (transfer offers in TLV 8
above all).

Only for tests: it listens on 127.0.0.1 alone, and every method is meant to
be called from the event loop it runs on. Example::

    async with HostileServer("127.0.0.1", prosody.c2s_port) as server:
        alice = await connect(jid, password, server.host, server.port, tls="none")
        server.drop(matching("message", from_="bob@xfer.test"), "to_client")
        server.inject_to_client(
            "<message from='bob@xfer.test/b' type='chat'><body>hi</body></message>"
        )
"""

from __future__ import annotations

from xfer.testing.hostile.forged import ForgedEvent, ForgedOTRPeer
from xfer.testing.hostile.server import Hold, HostileServer, Rule, StanzaRecord
from xfer.testing.hostile.stanzas import (
    CLIENT_NS,
    Direction,
    Directions,
    MalformedStream,
    Predicate,
    Stanza,
    StanzaSplitter,
    body,
    chat_message,
    jid_matches,
    matching,
    serialize,
    to_element,
)

__all__ = [
    "CLIENT_NS",
    "Direction",
    "Directions",
    "ForgedEvent",
    "ForgedOTRPeer",
    "Hold",
    "HostileServer",
    "MalformedStream",
    "Predicate",
    "Rule",
    "Stanza",
    "StanzaRecord",
    "StanzaSplitter",
    "body",
    "chat_message",
    "jid_matches",
    "matching",
    "serialize",
    "to_element",
]
