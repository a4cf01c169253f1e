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

import asyncio
import contextlib
import copy
import itertools
import logging
import os
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar
from xml.parsers import expat
from xml.sax.saxutils import escape

from xfer.errors import NotSecure, RemoteProtocolError
from xfer.otr import events as ev
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.otr.session import Policy
from xfer.testing._listener import LoopbackListener
from xfer.transfer.offer import XFER_USE, TransferOffer

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from xfer.otr.session import Session

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

log = logging.getLogger(__name__)

#: ``"to_client"``: what the server sends the client; ``"to_server"``: the
#: client's stanzas on their way to the server.
Direction = Literal["to_client", "to_server"]
#: Where a rule applies: one direction or both.
Directions = Literal["to_client", "to_server", "both"]

#: Tells whether a rule applies to a stanza; must not change it.
Predicate: TypeAlias = Callable[[ET.Element], bool]

CLIENT_NS = "jabber:client"
STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
XML_NS = "http://www.w3.org/XML/1998/namespace"
SM_NAMESPACES = ("urn:xmpp:sm:3", "urn:xmpp:sm:2")
NS_EME = "urn:xmpp:eme:0"
NS_OTR = "urn:xmpp:otr:0"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"

_CHUNK = 64 * 1024
_WHITESPACE = b" \t\r\n"
#: How long a closing connection may take to flush before it is aborted.
_CLOSE_TIMEOUT = 2.0

_E = TypeVar("_E", bound=ev.Event)


class MalformedStream(Exception):
    """A side sent bytes that are not a well-formed XMPP stream."""


# -- XML: splitting a stream, serializing elements ------------------------------


@dataclass(frozen=True, slots=True)
class Stanza:
    """One top-level element of a stream, parsed, with its exact bytes."""

    element: ET.Element
    raw: bytes


def _qualified(name: str) -> str:
    """expat's ``ns}local`` (its separator is ``}``) as ElementTree's ``{ns}local``."""
    return "{" + name if "}" in name else name


def _tag_end(buf: bytearray, pos: int) -> int:
    """The index just after the ``>`` closing the tag that starts at ``pos``
    (a ``>`` inside a quoted attribute value does not count)."""
    quote = 0
    for i in range(pos, len(buf)):
        c = buf[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return i + 1
    raise MalformedStream("a tag does not end")


class StanzaSplitter:
    """Splits one direction of an XMPP stream into top-level elements.

    :meth:`feed` takes bytes as they arrive and returns, in order, pieces
    that together are exactly those bytes: :class:`Stanza` for each complete
    child of ``<stream:stream>``, ``bytes`` for everything else (the XML
    declaration and stream header, whitespace keepalives between stanzas,
    ``</stream:stream>``). Bytes of an incomplete stanza are kept until it
    is complete, so the caller may write other stanzas between pieces.

    A stream restarts after SASL success: the element for which
    ``restart_after`` is true ends the current document, and the bytes after
    it start a new one (a fresh parser). :meth:`restart` does the same from
    outside, for the direction whose restart the other direction announces.

    Raises:
        MalformedStream: from :meth:`feed`, for bytes that are not XML.
    """

    def __init__(self, *, restart_after: Predicate | None = None) -> None:
        self._restart_after = restart_after
        self._out: list[Stanza | bytes] = []
        #: Attributes of the latest stream header (None before one arrived).
        self.header: dict[str, str] | None = None
        self._reset()

    def _reset(self) -> None:
        parser = expat.ParserCreate(None, "}")
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._data
        self._parser = parser
        self._buf = bytearray()
        self._base = 0  # parser offset of _buf[0]
        self._done = 0  # parser offset up to which pieces were returned
        self._depth = 0
        self._builder: ET.TreeBuilder | None = None
        self._stanza_at = 0
        self._empty_end: int | None = None
        self._restart_at: int | None = None
        #: ``</stream:stream>`` was seen: the rest passes through as bytes.
        self.ended = False

    def feed(self, data: bytes) -> list[Stanza | bytes]:
        """The pieces completed by ``data`` (see the class)."""
        out: list[Stanza | bytes] = []
        self._out = out
        pending = data
        while pending:
            self._buf += pending
            if self.ended:
                break
            try:
                self._parser.Parse(pending, False)
            except expat.ExpatError as exc:
                if self._restart_at is None:
                    raise MalformedStream(str(exc)) from exc
            if self._restart_at is None:
                break
            rest = bytes(self._buf[self._restart_at - self._base :])
            self._reset()
            pending = rest.lstrip(_WHITESPACE)
            if len(pending) < len(rest):
                out.append(rest[: len(rest) - len(pending)])
        self._settle()
        return out

    def restart(self) -> list[Stanza | bytes]:
        """Start a new document now (the peer's stream restarts); returns
        the bytes held so far, which can only be whitespace."""
        rest = bytes(self._buf[self._done - self._base :])
        self._reset()
        out: list[Stanza | bytes] = []
        if rest.strip(_WHITESPACE):
            out.extend(self.feed(rest))
        elif rest:
            out.append(rest)
        return out

    def _settle(self) -> None:
        """Pass on whitespace between stanzas, and anything after the end;
        forget the bytes returned."""
        held = self._buf[self._done - self._base :]
        if self.ended:
            self._emit(self._done + len(held))
        elif self._depth == 1:
            self._emit(self._done + len(held) - len(held.lstrip(_WHITESPACE)))
        del self._buf[: self._done - self._base]
        self._base = self._done

    def _emit(self, upto: int) -> None:
        if upto > self._done:
            self._out.append(
                bytes(self._buf[self._done - self._base : upto - self._base])
            )
            self._done = upto

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if self._restart_at is not None:
            return
        at = self._parser.CurrentByteIndex
        tag = _qualified(name)
        attributes = {_qualified(k): v for k, v in attrs.items()}
        if self._depth == 0:
            self.header = attributes
            self._emit(_tag_end(self._buf, at - self._base) + self._base)
        elif self._depth == 1:
            self._emit(at)
            end = _tag_end(self._buf, at - self._base)
            self._stanza_at = at
            self._empty_end = end + self._base if self._buf[end - 2] == 0x2F else None
            self._builder = ET.TreeBuilder()
            self._builder.start(tag, attributes)
        else:
            assert self._builder is not None
            self._builder.start(tag, attributes)
        self._depth += 1

    def _end(self, name: str) -> None:
        if self._restart_at is not None:
            return
        self._depth -= 1
        at = self._parser.CurrentByteIndex
        if self._depth >= 1:
            assert self._builder is not None
            self._builder.end(_qualified(name))
        if self._depth > 1:
            return
        if self._depth == 0:
            self._emit(self._buf.index(b">", at - self._base) + 1 + self._base)
            self.ended = True
            return
        assert self._builder is not None
        element = self._builder.close()
        self._builder = None
        end = self._empty_end
        if end is None:
            end = self._buf.index(b">", at - self._base) + 1 + self._base
        raw = bytes(self._buf[self._stanza_at - self._base : end - self._base])
        self._done = end
        self._out.append(Stanza(element, raw))
        if self._restart_after is not None and self._restart_after(element):
            self._restart_at = end

    def _data(self, text: str) -> None:
        if self._builder is not None and self._restart_at is None:
            self._builder.data(text)


def _split_tag(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


_ATTR_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def serialize(element: ET.Element, *, default_ns: str = CLIENT_NS) -> bytes:
    """``element`` as the bytes of a top-level element of a stream whose
    default namespace is ``default_ns``.

    Each element whose namespace differs from its parent's declares it as
    the default (``xmlns='...'``), the way XMPP software writes stanzas;
    the streams namespace uses the ``stream:`` prefix that every stream
    header declares. An unqualified tag belongs to its parent's namespace.
    """
    out: list[str] = []
    _write(element, default_ns, out)
    return "".join(out).encode("utf-8")


def _write(element: ET.Element, default_ns: str, out: list[str]) -> None:
    ns, local = _split_tag(str(element.tag))
    parts: list[str] = []
    if ns == STREAM_NS:
        name = f"stream:{local}"
    else:
        name = local
        if ns is not None and ns != default_ns:
            parts.append(f' xmlns="{escape(ns, _ATTR_ESCAPES)}"')
            default_ns = ns
    prefixes = itertools.count()
    for key, value in element.attrib.items():
        attr_ns, attr_local = _split_tag(key)
        if attr_ns is None:
            attr = attr_local
        elif attr_ns == XML_NS:
            attr = f"xml:{attr_local}"
        else:
            prefix = f"a{next(prefixes)}"
            parts.append(f' xmlns:{prefix}="{escape(attr_ns, _ATTR_ESCAPES)}"')
            attr = f"{prefix}:{attr_local}"
        parts.append(f' {attr}="{escape(value, _ATTR_ESCAPES)}"')
    children = list(element)
    if not children and not element.text:
        out.append(f"<{name}{''.join(parts)}/>")
        return
    out.append(f"<{name}{''.join(parts)}>")
    if element.text:
        out.append(escape(element.text, {"\r": "&#13;"}))
    for child in children:
        _write(child, default_ns, out)
        if child.tail:
            out.append(escape(child.tail, {"\r": "&#13;"}))
    out.append(f"</{name}>")


def _qualify(element: ET.Element, ns: str) -> ET.Element:
    """Give unqualified tags their parent's namespace (``ns`` at the top), in place."""
    tag_ns, local = _split_tag(str(element.tag))
    if tag_ns is None:
        element.tag = f"{{{ns}}}{local}"
        tag_ns = ns
    for child in element:
        _qualify(child, tag_ns)
    return element


def to_element(stanza: ET.Element | str) -> ET.Element:
    """A copy of ``stanza`` (an element, or XML text) with every tag
    qualified: one without a namespace is in ``jabber:client`` at the top,
    in its parent's below."""
    element = (
        ET.fromstring(stanza)  # noqa: S314 - a test's own XML
        if isinstance(stanza, str)
        else copy.deepcopy(stanza)
    )
    return _qualify(element, CLIENT_NS)


# -- matching stanzas ------------------------------------------------------------


def jid_matches(value: str | None, want: str) -> bool:
    """Whether the JID ``value`` is ``want``: exactly for a full JID, any
    resource of it for a bare one (case-insensitive local part and domain)."""
    if value is None:
        return False
    if "/" in want:
        bare, _, resource = want.partition("/")
        got_bare, _, got_resource = value.partition("/")
        return got_bare.lower() == bare.lower() and got_resource == resource
    return value.partition("/")[0].lower() == want.lower()


def body(element: ET.Element) -> str | None:
    """The text of a message's ``<body/>``, if it has one."""
    found = element.find(f"{{{CLIENT_NS}}}body")
    if found is None:
        return None
    return found.text or ""


def matching(
    kind: str | None = None,
    *,
    to: str | None = None,
    from_: str | None = None,
    type_: str | None = None,
    body_prefix: str | None = None,
    child: str | None = None,
) -> Predicate:
    """A predicate for stanzas: ``kind`` is the local name (``message``,
    ``presence``, ``iq``); ``to`` and ``from_`` are JIDs as in
    :func:`jid_matches`; ``child`` is a ``{namespace}name`` found anywhere
    below the stanza."""

    def predicate(element: ET.Element) -> bool:
        if kind is not None and _split_tag(str(element.tag))[1] != kind:
            return False
        if to is not None and not jid_matches(element.get("to"), to):
            return False
        if from_ is not None and not jid_matches(element.get("from"), from_):
            return False
        if type_ is not None and element.get("type", "normal") != type_:
            return False
        if body_prefix is not None:
            text = body(element)
            if text is None or not text.startswith(body_prefix):
                return False
        return child is None or element.find(f".//{child}") is not None

    return predicate


def chat_message(
    sender: str | None, recipient: str | None, text: str, *, otr: bool = True
) -> ET.Element:
    """A ``<message type='chat'/>`` with ``text`` as its body; with ``otr``,
    the OTR marker and hints that xfer's OTR adapter puts on its messages."""
    message = ET.Element(f"{{{CLIENT_NS}}}message", {"type": "chat"})
    if sender is not None:
        message.set("from", sender)
    if recipient is not None:
        message.set("to", recipient)
    ET.SubElement(message, f"{{{CLIENT_NS}}}body").text = text
    if otr:
        ET.SubElement(
            message, f"{{{NS_EME}}}encryption", {"namespace": NS_OTR, "name": "OTR"}
        )
        ET.SubElement(message, f"{{{NS_HINTS}}}no-store")
        ET.SubElement(message, f"{{{NS_HINTS}}}no-copy")
        ET.SubElement(message, f"{{{NS_CARBONS}}}private")
    return message


# -- the man in the middle -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StanzaRecord:
    """One element read from a side (:meth:`HostileServer.seen`) or written
    to one (:meth:`HostileServer.delivered`). Do not change ``element``."""

    direction: Direction
    element: ET.Element
    #: The bytes read or written.
    raw: bytes
    #: The event loop's clock (monotonic seconds).
    time: float
    #: Which client connection (0, 1, ... in the order accepted).
    connection: int
    #: Written by the hostile server itself (injected), not forwarded.
    injected: bool = False


@dataclass(frozen=True, slots=True)
class _Waiter:
    """A :meth:`HostileServer.wait_for` in progress."""

    predicate: Predicate
    direction: Directions
    delivered: bool
    future: asyncio.Future[StanzaRecord] = field(repr=False)


@dataclass(slots=True)
class _Item:
    """An element on its way out: ``raw`` is None once a rule changed it."""

    element: ET.Element
    raw: bytes | None


class _Connection:
    """One accepted client and its upstream connection to the server."""

    def __init__(self, serial: int, client: asyncio.StreamWriter) -> None:
        self.serial = serial
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.splitters: dict[Direction, StanzaSplitter] = {
            "to_client": StanzaSplitter(restart_after=_is_sasl_success),
            "to_server": StanzaSplitter(),
        }
        self.timers: set[asyncio.TimerHandle] = set()
        self.closed = False
        #: Fires when either side closed (or the proxy closed the connection).
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sink(self, direction: Direction) -> asyncio.StreamWriter:
        if direction == "to_client":
            return self.client
        if self.upstream is None:
            raise RuntimeError("the connection to the server is not open yet")
        return self.upstream

    def close(self, *, abort: bool = False) -> None:
        """Close both sides (``abort``: without flushing)."""
        if not self.gone.done():
            self.gone.set_result(None)
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        writers = [w for w in (self.client, self.upstream) if w is not None]
        if abort:
            for w in writers:
                w.transport.abort()
        elif not self.closed:
            for w in writers:
                w.close()
        self.closed = True


def _is_sasl_success(element: ET.Element) -> bool:
    return element.tag == f"{{{SASL_NS}}}success"


class Rule:
    """A registered rule. ``matched`` counts the stanzas it acted on;
    :meth:`remove` unregisters it."""

    def __init__(
        self,
        server: HostileServer,
        direction: Directions,
        act: Callable[[_Connection, Direction, _Item], list[_Item] | None],
    ) -> None:
        if direction not in ("to_client", "to_server", "both"):
            raise ValueError(f"not a direction: {direction!r}")
        self._server = server
        self.direction: Directions = direction
        self._act = act
        self.matched = 0

    def applies(self, direction: Direction) -> bool:
        return self.direction in ("both", direction)

    def apply(
        self, conn: _Connection, direction: Direction, item: _Item
    ) -> list[_Item] | None:
        out = self._act(conn, direction, item)
        if out is not None:
            self.matched += 1
        return out

    def remove(self) -> None:
        """Stop applying this rule (what it holds or delays is kept)."""
        self._server._remove_rule(self)


class Hold(Rule):
    """Keeps matching stanzas back until :meth:`release` (in any order) or
    :meth:`discard`."""

    def __init__(
        self,
        server: HostileServer,
        predicate: Predicate,
        direction: Directions,
    ) -> None:
        super().__init__(server, direction, self._keep)
        self._predicate = predicate
        self._held: list[tuple[_Connection, Direction, _Item]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def _keep(
        self, conn: _Connection, direction: Direction, item: _Item
    ) -> list[_Item] | None:
        if not self._predicate(item.element):
            return None
        self._held.append((conn, direction, item))
        for count, waiter in self._waiters:
            if len(self._held) >= count and not waiter.done():
                waiter.set_result(None)
        return []

    @property
    def held(self) -> list[ET.Element]:
        """The stanzas held now, in arrival order."""
        return [item.element for _, _, item in self._held]

    async def wait(self, count: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` stanzas are held.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        if len(self._held) >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.remove(entry)

    def release(self, order: Sequence[int] | None = None) -> int:
        """Stop holding and send what was held: in arrival order, or in
        ``order`` (indexes into :attr:`held`; those left out are dropped).
        Returns how many were sent (not those whose connection closed)."""
        self.remove()
        held, self._held = self._held, []
        chosen = [held[i] for i in (range(len(held)) if order is None else order)]
        sent = 0
        for conn, direction, item in chosen:
            if not conn.closed:
                self._server._deliver(conn, direction, item)
                sent += 1
        return sent

    def discard(self) -> int:
        """Stop holding and drop what was held; returns how many."""
        self.remove()
        dropped, self._held = len(self._held), []
        return dropped


class HostileServer(LoopbackListener[_Connection]):
    """A stanza-level man in the middle between clients and an XMPP server.

    Each client connection to :attr:`host`:\\ :attr:`port` gets its own
    connection to ``upstream_host``:``upstream_port``. Rules and the logs
    are shared by all connections; injections go to the latest one that is
    open (a test has one client). Use it as an async context manager, or
    call :meth:`start` and :meth:`stop`.

    Args:
        strip_sm: remove the stream management feature from the server's
            ``<stream:features/>`` (see the module).
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, strip_sm: bool = True
    ) -> None:
        super().__init__()
        self._upstream = (upstream_host, upstream_port)
        self.strip_sm = strip_sm
        self._rules: list[Rule] = []
        self._seen: list[StanzaRecord] = []
        self._delivered: list[StanzaRecord] = []
        self._waiters: list[_Waiter] = []
        #: The full JID the server bound for the latest client (None before).
        self.client_jid: str | None = None
        #: How many ``<stream:features/>`` lost their stream management feature.
        self.sm_stripped = 0
        #: Exceptions raised by rules and hooks (each closed its connection).
        self.errors: list[BaseException] = []

    # -- life cycle ---------------------------------------------------------

    def _connection(self, serial: int, writer: asyncio.StreamWriter) -> _Connection:
        return _Connection(serial, writer)

    def _abort(self, conn: _Connection) -> None:
        conn.close(abort=True)

    def _after_relays(self) -> None:
        for entry in self._waiters:
            if not entry.future.done():
                entry.future.cancel()

    def disconnect(self) -> int:
        """Abort every open connection (both sides); returns how many."""
        conns = list(self._live.values())
        for conn in conns:
            conn.close(abort=True)
        return len(conns)

    # -- logs -----------------------------------------------------------------

    def seen(self, direction: Directions = "both") -> list[StanzaRecord]:
        """Every element read so far (from the client: ``to_server``; from
        the server: ``to_client``), before any rule, in order."""
        return [r for r in self._seen if direction in ("both", r.direction)]

    def delivered(self, direction: Directions = "both") -> list[StanzaRecord]:
        """Every element written so far (forwarded, rewritten, released,
        delayed or injected), in order."""
        return [r for r in self._delivered if direction in ("both", r.direction)]

    async def wait_for(
        self,
        predicate: Predicate,
        direction: Directions = "both",
        *,
        timeout: float = 10.0,
        past: bool = False,
        delivered: bool = False,
    ) -> StanzaRecord:
        """The next element read in ``direction`` for which ``predicate`` is
        true (with ``past``, also one already read; with ``delivered``, one
        written instead: what the receiving side got, injections included).

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        if past:
            records = self.delivered(direction) if delivered else self.seen(direction)
            for record in records:
                if predicate(record.element):
                    return record
        waiter: asyncio.Future[StanzaRecord] = (
            asyncio.get_running_loop().create_future()
        )
        entry = _Waiter(predicate, direction, delivered, waiter)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no matching stanza {direction} within {timeout:g} s"
            ) from None
        finally:
            self._waiters.remove(entry)

    # -- rules ------------------------------------------------------------------

    def on_stanza(
        self,
        hook: Callable[[Direction, ET.Element], Iterable[ET.Element] | None],
        direction: Directions = "both",
    ) -> Rule:
        """Call ``hook(direction, element)`` on each stanza: None lets it
        through unchanged (as its original bytes), otherwise the elements
        returned go on instead (none: it is dropped). Rules run in the
        order registered, each on what the ones before let through; the
        element must not be changed in place (copy it first)."""

        def act(_conn: _Connection, d: Direction, item: _Item) -> list[_Item] | None:
            out = hook(d, item.element)
            if out is None:
                return None
            return [_Item(_qualify(e, CLIENT_NS), None) for e in out]

        return self._add_rule(Rule(self, direction, act))

    def drop(self, predicate: Predicate, direction: Directions = "both") -> Rule:
        """Drop every stanza for which ``predicate`` is true."""

        def act(_conn: _Connection, _d: Direction, item: _Item) -> list[_Item] | None:
            return [] if predicate(item.element) else None

        return self._add_rule(Rule(self, direction, act))

    def delay(
        self,
        predicate: Predicate,
        seconds: float,
        direction: Directions = "both",
    ) -> Rule:
        """Send each matching stanza ``seconds`` later (others overtake it;
        later rules do not see it)."""
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, not {seconds}")

        def act(conn: _Connection, d: Direction, item: _Item) -> list[_Item] | None:
            if not predicate(item.element):
                return None
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                assert timer is not None
                conn.timers.discard(timer)
                if not conn.closed:
                    self._deliver(conn, d, item)

            timer = loop.call_later(seconds, fire)
            conn.timers.add(timer)
            return []

        return self._add_rule(Rule(self, direction, act))

    def hold(self, predicate: Predicate, direction: Directions = "both") -> Hold:
        """Keep matching stanzas back until :meth:`Hold.release` (which may
        reorder them) or :meth:`Hold.discard`."""
        rule = Hold(self, predicate, direction)
        self._add_rule(rule)
        return rule

    def rewrite(
        self,
        predicate: Predicate,
        fn: Callable[[ET.Element], ET.Element],
        direction: Directions = "both",
    ) -> Rule:
        """Send ``fn(copy)`` instead of each matching stanza (``fn`` gets a
        deep copy and may change and return it)."""

        def act(_conn: _Connection, _d: Direction, item: _Item) -> list[_Item] | None:
            if not predicate(item.element):
                return None
            return [_Item(_qualify(fn(copy.deepcopy(item.element)), CLIENT_NS), None)]

        return self._add_rule(Rule(self, direction, act))

    def clear_rules(self) -> int:
        """Remove every rule (stanzas held or delayed stay so); returns how many."""
        count = len(self._rules)
        self._rules.clear()
        return count

    def _add_rule(self, rule: Rule) -> Rule:
        self._rules.append(rule)
        return rule

    def _remove_rule(self, rule: Rule) -> None:
        with contextlib.suppress(ValueError):
            self._rules.remove(rule)

    # -- injection --------------------------------------------------------------

    def inject_to_client(self, stanza: ET.Element | str) -> ET.Element:
        """Send ``stanza`` (an element or XML text; an unqualified tag is in
        ``jabber:client``) to the client as the server's own, bypassing the
        rules. A stanza without ``to`` is addressed to :attr:`client_jid`.
        Returns the element sent.

        Raises:
            RuntimeError: no client is connected.
        """
        element = to_element(stanza)
        if element.get("to") is None and self.client_jid is not None:
            _, local = _split_tag(str(element.tag))
            if local in ("message", "presence", "iq"):
                element.set("to", self.client_jid)
        self._deliver(self._current(), "to_client", _Item(element, None), injected=True)
        return element

    def inject_to_server(self, stanza: ET.Element | str) -> ET.Element:
        """Send ``stanza`` to the server as if the client had sent it (leave
        ``from`` out: the server stamps the client's JID and refuses any
        other). Returns the element sent.

        Raises:
            RuntimeError: no client is connected.
        """
        element = to_element(stanza)
        self._deliver(self._current(), "to_server", _Item(element, None), injected=True)
        return element

    def _current(self) -> _Connection:
        for conn in reversed(self._live.values()):
            if not conn.closed and conn.upstream is not None:
                return conn
        raise RuntimeError("no client is connected through the hostile server")

    # -- relaying -----------------------------------------------------------------

    async def _serve(self, conn: _Connection, client: asyncio.StreamReader) -> None:
        try:
            try:
                from_server, conn.upstream = await asyncio.open_connection(
                    *self._upstream
                )
            except OSError:
                return  # the server is down: so is the connection
            if conn.closed:
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(conn, client, "to_server"))
                group.create_task(self._pump(conn, from_server, "to_client"))
        finally:
            await self._finish(conn)

    async def _finish(self, conn: _Connection) -> None:
        conn.close()
        for writer in (conn.client, conn.upstream):
            if writer is None:
                continue
            try:
                await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
            except (OSError, TimeoutError):
                writer.transport.abort()
            except asyncio.CancelledError:
                writer.transport.abort()
                raise
        self._live.pop(conn.serial, None)

    async def _pump(
        self, conn: _Connection, source: asyncio.StreamReader, direction: Direction
    ) -> None:
        """Relay one direction until either side closes."""
        splitter = conn.splitters[direction]
        try:
            while not conn.closed:
                read = asyncio.ensure_future(source.read(_CHUNK))
                try:
                    await asyncio.wait(
                        (read, conn.gone), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    if not read.done():
                        read.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await read
                if conn.closed or not read.done():
                    return
                data = read.result()
                if not data:
                    return
                for piece in splitter.feed(data):
                    if isinstance(piece, Stanza):
                        self._dispatch(conn, direction, piece)
                    elif not conn.closed:
                        conn.sink(direction).write(piece)
                if not conn.closed:
                    await conn.sink(direction).drain()
        except (OSError, MalformedStream) as exc:
            log.info(
                "hostile server: connection %d %s: %s", conn.serial, direction, exc
            )
        except Exception as exc:  # a rule or hook failed: report it, end the link
            log.exception("hostile server: a rule failed (%s)", direction)
            self.errors.append(exc)
        finally:
            conn.close()

    def _dispatch(
        self, conn: _Connection, direction: Direction, stanza: Stanza
    ) -> None:
        element = stanza.element
        loop = asyncio.get_running_loop()
        record = StanzaRecord(direction, element, stanza.raw, loop.time(), conn.serial)
        self._seen.append(record)
        self._notify(record, delivered=False)
        if direction == "to_client":
            self._learn(conn, element)
        items = [_Item(element, stanza.raw)]
        if direction == "to_client" and self.strip_sm:
            items = self._strip_sm(items)
        for rule in list(self._rules):
            if not items:
                break
            if not rule.applies(direction):
                continue
            passed: list[_Item] = []
            for item in items:
                out = rule.apply(conn, direction, item)
                passed.extend([item] if out is None else out)
            items = passed
        for item in items:
            self._deliver(conn, direction, item)

    def _notify(self, record: StanzaRecord, *, delivered: bool) -> None:
        for entry in list(self._waiters):
            if (
                entry.future.done()
                or entry.delivered != delivered
                or entry.direction not in ("both", record.direction)
            ):
                continue
            try:
                if entry.predicate(record.element):
                    entry.future.set_result(record)
            except Exception as exc:  # handed to the waiting test
                entry.future.set_exception(exc)

    def _learn(self, conn: _Connection, element: ET.Element) -> None:
        """Follow the stream: its restart after SASL, the bound JID."""
        if _is_sasl_success(element):
            # The client restarts its stream as soon as it reads this.
            for piece in conn.splitters["to_server"].restart():
                assert isinstance(piece, bytes)
                conn.sink("to_server").write(piece)
        elif element.tag == f"{{{CLIENT_NS}}}iq" and element.get("type") == "result":
            jid = element.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
            if jid is not None and jid.text:
                self.client_jid = jid.text.strip()

    def _strip_sm(self, items: list[_Item]) -> list[_Item]:
        out: list[_Item] = []
        for item in items:
            element = item.element
            if element.tag == f"{{{STREAM_NS}}}features" and any(
                _split_tag(str(c.tag))[0] in SM_NAMESPACES for c in element
            ):
                element = copy.deepcopy(element)
                for c in list(element):
                    if _split_tag(str(c.tag))[0] in SM_NAMESPACES:
                        element.remove(c)
                self.sm_stripped += 1
                out.append(_Item(element, None))
            else:
                out.append(item)
        return out

    def _deliver(
        self,
        conn: _Connection,
        direction: Direction,
        item: _Item,
        *,
        injected: bool = False,
    ) -> None:
        if conn.closed:
            return
        data = item.raw if item.raw is not None else serialize(item.element)
        conn.sink(direction).write(data)
        record = StanzaRecord(
            direction,
            item.element,
            data,
            asyncio.get_running_loop().time(),
            conn.serial,
            injected,
        )
        self._delivered.append(record)
        self._notify(record, delivered=True)


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
