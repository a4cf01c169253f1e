"""The one place where xfer reaches past slixmpp's typed, public surface.

slixmpp types its plugin registry as a ``TypedDict`` of its own plugins, leaves
``Iq.reply`` and ``Iq.send`` unannotated, and keeps XEP-0198's books in plain
attributes of its ``xep_0198`` plugin. xfer's plugins need all three, and a
raw write to the stream's transport for bulk data. Each need is one small,
typed function here, so that a new slixmpp release is checked in one module
(``tests/test_architecture.py`` keeps it that way):

* :func:`plugin`: a registered plugin, typed as the caller's class;
* :func:`ack`, :func:`send_iq`, :func:`error_reply`: IQ
  replies and requests (RFC 6120 section 8.2.3: every get or set is answered
  with exactly one result or error);
* :class:`DirectedPresence`: presence sent to one peer, once, so that its
  server tells it when we go offline (RFC 6121 section 4.6);
* :func:`write_raw`, :func:`wait_for_room`, :func:`is_connected`: writes past
  slixmpp's send path, counted for XEP-0198 (:func:`count_for_stream_management`);
* :func:`stream_addresses`: the two ends of the XMPP connection (for our
  direct SOCKS5 candidates);
* :func:`drop_session`: abort the connection and forget its XEP-0198
  resumption, so that the reconnection binds a fresh session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar, cast

from slixmpp.plugins.base import BasePlugin

from xfer.errors import ConnectionFailed

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Mapping

    from slixmpp.basexmpp import BaseXMPP
    from slixmpp.stanza import Iq

__all__ = [
    "DirectedPresence",
    "ack",
    "count_for_stream_management",
    "drop_session",
    "error_reply",
    "is_connected",
    "plugin",
    "send_iq",
    "stream_addresses",
    "wait_for_room",
    "write_raw",
]

#: XEP-0198 counts stanzas modulo 2^32.
SM_MAX_SEQ = 2**32

P = TypeVar("P", bound=BasePlugin)


def _plugins(xmpp: BaseXMPP) -> Mapping[str, Any]:
    """slixmpp types the registry as always holding exactly its own plugins."""
    return cast("Mapping[str, Any]", xmpp.plugin)


def plugin(xmpp: BaseXMPP, name: str, kind: type[P]) -> P:
    """The plugin registered as ``name``, which the caller knows is a ``kind``.

    The type is not checked at run time (a plugin module reloaded by a test
    would fail an ``isinstance``); ``kind`` only tells the type checker.

    Raises:
        slixmpp.plugins.base.PluginNotFound: no plugin has that name.
    """
    del kind
    found: P = _plugins(xmpp)[name]
    return found


def ack(iq: Iq, payload: ET.Element | None = None) -> None:
    """Send the IQ result to ``iq``: empty, or with ``payload`` as its child."""
    reply: Iq = iq.reply()  # type: ignore[no-untyped-call]
    if payload is not None:
        reply.xml.append(payload)
    reply.send()  # type: ignore[no-untyped-call]


async def send_iq(iq: Iq, timeout: float) -> Iq:
    """Send a get or set and wait for its result.

    Raises:
        slixmpp.exceptions.IqError: the answer was an error.
        slixmpp.exceptions.IqTimeout: no answer within ``timeout`` seconds.
    """
    answer: Iq = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
    return answer


def error_reply(
    iq: Iq,
    condition: str,
    etype: str = "cancel",
    *,
    text: str | None = None,
    detail: ET.Element | None = None,
    keep_payload: bool = False,
) -> None:
    """Answer ``iq`` with an error and send it.

    Args:
        condition: the RFC 6120 defined condition (``"item-not-found"``).
        etype: the error type (``"cancel"``, ``"modify"``, ``"wait"``...).
        text: a human-readable ``<text/>``, if any.
        detail: an application-specific condition element, if any.
        keep_payload: include the request's payload (RFC 6120 8.3.1 allows it).
    """
    reply: Iq = iq.reply(clear=not keep_payload)  # type: ignore[no-untyped-call]
    reply["error"]["condition"] = condition
    reply["error"]["type"] = etype
    if text is not None:
        reply["error"]["text"] = text
    if detail is not None:
        reply["error"].xml.append(detail)
    reply.send()  # type: ignore[no-untyped-call]


class DirectedPresence:
    """Presence sent once to each peer we deal with.

    The server then tells that peer when we go offline (RFC 6121 section
    4.6), so its sessions and streams with us fail at once instead of
    waiting. A new server session (not a resumed one) has forgotten whom we
    told: :meth:`clear` then.
    """

    def __init__(self, xmpp: BaseXMPP) -> None:
        self._xmpp = xmpp
        self._told: set[str] = set()

    def announce(self, peer: str) -> None:
        """Send our presence to ``peer`` unless it already has it."""
        if peer not in self._told:
            self._told.add(peer)
            self._xmpp.send_presence(pto=peer)

    def clear(self) -> None:
        """Forget whom we told."""
        self._told.clear()


def is_connected(xmpp: BaseXMPP) -> bool:
    """Whether the stream has a transport (so something sent may arrive)."""
    return xmpp.transport is not None


def stream_addresses(xmpp: BaseXMPP) -> tuple[str | None, str | None]:
    """The local and the remote IP address of the XMPP connection (None
    where unknown): where we leave from toward the server, and whether the
    server is on this host."""
    transport = xmpp.transport
    if transport is None:
        return None, None
    ends: list[str | None] = []
    for key in ("sockname", "peername"):
        name = transport.get_extra_info(key)
        ends.append(str(name[0]) if isinstance(name, tuple) and name else None)
    return ends[0], ends[1]


def write_raw(xmpp: BaseXMPP, text: str) -> None:
    """Write one serialised stanza straight to the transport.

    slixmpp's send path serialises and queues every stanza: too slow for
    bulk data. The stanza is counted for XEP-0198 as ``send()`` would.

    Raises:
        ConnectionFailed: the connection is closed.
    """
    transport = xmpp.transport
    if transport is None or transport.is_closing():
        raise ConnectionFailed("the XMPP connection is closed")
    transport.write(text.encode("utf-8"))
    count_for_stream_management(xmpp, text)


async def wait_for_room(xmpp: BaseXMPP, high_water: int) -> None:
    """Wait while the transport holds more than ``high_water`` bytes unsent.

    Raises:
        ConnectionFailed: the connection closed meanwhile.
    """
    transport = xmpp.transport
    while transport is not None and transport.get_write_buffer_size() > high_water:
        if transport.is_closing():
            raise ConnectionFailed("the XMPP connection is closed")
        await asyncio.sleep(0.001)


def count_for_stream_management(xmpp: BaseXMPP, text: str) -> None:
    """Keep XEP-0198's books for a stanza written past slixmpp's send path.

    The server counts every stanza it handles; slixmpp's ``xep_0198`` counts
    only what went through ``send()``. Without this, its count falls behind
    the server's acknowledgements, and a resumed stream would not resend
    what the server never got. The text is queued as it is: slixmpp resends
    unacknowledged stanzas with ``send()``, which takes a string.
    """
    plugins = _plugins(xmpp)
    if "xep_0198" not in plugins:
        return
    sm = plugins["xep_0198"]
    if not sm.enabled_out:
        return
    sm.seq = (sm.seq + 1) % SM_MAX_SEQ
    sm.unacked_queue.append((sm.seq, text))
    sm.window_counter -= 1
    if sm.window_counter <= 0:
        sm.window_counter = sm.window
        sm.request_ack()


def drop_session(xmpp: BaseXMPP) -> None:
    """Abort the connection and forget its XEP-0198 resumption token.

    The client's reconnection then binds a fresh session instead of
    resuming this one (for a resumed stream the server no longer serves).
    """
    _plugins(xmpp)["xep_0198"].sm_id = None
    transport = xmpp.transport
    if transport is not None:
        transport.abort()


def server_ended_stream(xmpp: BaseXMPP) -> bool:
    """Whether the connection is being closed because the server ended the
    XML stream (slixmpp then aborts by itself), rather than by our user."""
    return xmpp.disconnect_reason == "End of stream"
