"""The hostile server's stanza tools: a stream split into top-level
elements, their serialization, and predicates that match them."""

from __future__ import annotations

import copy
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias
from xml.parsers import expat
from xml.sax.saxutils import escape

__all__ = [
    "CLIENT_NS",
    "Direction",
    "Directions",
    "MalformedStream",
    "Predicate",
    "Stanza",
    "StanzaSplitter",
    "body",
    "chat_message",
    "jid_matches",
    "matching",
    "serialize",
    "to_element",
]

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
