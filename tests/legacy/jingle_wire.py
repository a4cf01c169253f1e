# A frozen copy of xfer/jingle/wire.py as it was at commit
# 665f97d002962b848f12d853ae66e452bca8513a, the last before streams (issue 16):
# what an older xfer peer runs. Do not edit it; tests load it with
# tests.helpers.old_module. Its imports resolve to today's modules.
"""Jingle elements <-> data, sans-I/O: the ``<jingle/>`` payloads of xfer.

:func:`parse` turns a ``<jingle xmlns='urn:xmpp:jingle:1'/>`` element (from
any XML parser's ElementTree) into a :class:`Jingle`; :func:`build` does the
reverse. Parsing is strict and bounded: anything malformed, oversized or
unknown where xfer needs to understand it raises :class:`JingleError` with
``bad-request`` (the adapter answers the IQ with it). What xfer does not use
(other applications, unknown children) parses to ``None`` fields so that the
session can answer with the right Jingle reason instead of an IQ error.

The payloads (``spec/jingle.md``): XEP-0166 core (action, sid, initiator,
responder, contents, reason), XEP-0234 file-transfer:5 descriptions and the
``received``/``checksum`` session-info, XEP-0260 SOCKS5 transports
(candidates, candidate-used, candidate-error, activated, proxy-error),
XEP-0261 IBB transports, and xfer's ``<encrypted/>`` element binding a
content to an OTR transfer offer.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from xfer.errors import RemoteProtocolError
from xfer.jingle.candidates import Candidate, CandidateType
from xfer.jingle.files import (
    NS_FILE_TRANSFER,
    Checksum,
    FileDescription,
    Range,
    Received,
)
from xfer.jingle.session import JingleError
from xfer.jingle.states import Action, Reason, Role

__all__ = [
    "NS_ENCRYPTED",
    "NS_FILE_TRANSFER",
    "NS_HASHES",
    "NS_IBB",
    "NS_JINGLE",
    "NS_JINGLE_ERRORS",
    "NS_S5B",
    "Content",
    "Encrypted",
    "IBBTransport",
    "Jingle",
    "S5BTransport",
    "build",
    "parse",
]

NS_JINGLE = "urn:xmpp:jingle:1"
NS_JINGLE_ERRORS = "urn:xmpp:jingle:errors:1"
NS_S5B = "urn:xmpp:jingle:transports:s5b:1"
NS_IBB = "urn:xmpp:jingle:transports:ibb:1"
NS_HASHES = "urn:xmpp:hashes:2"
#: xfer's binding of a content to an OTR transfer offer (spec/jingle.md).
NS_ENCRYPTED = "urn:xfer:jingle:otr:1"

MAX_CONTENTS = 8
MAX_CANDIDATES = 16
MAX_HASHES = 8
MAX_ATTR = 1024
MAX_TEXT = 4096
MAX_SID = 128
MAX_BLOCK_SIZE = 65535

_SENDERS = frozenset({"both", "initiator", "none", "responder"})


def _bad(why: str) -> JingleError:
    return JingleError(why, condition="bad-request", jingle_condition=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class S5BTransport:
    """``<transport xmlns='urn:xmpp:jingle:transports:s5b:1'/>`` (XEP-0260).

    One transport element carries either candidates (in session-initiate,
    session-accept) or exactly one of the transport-info payloads.
    """

    sid: str
    dstaddr: str | None = None
    #: "tcp" in the initiator's offer; absent elsewhere (XEP-0260).
    mode: str | None = None
    candidates: tuple[Candidate, ...] = ()
    candidate_used: str | None = None
    candidate_error: bool = False
    activated: str | None = None
    proxy_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class IBBTransport:
    """``<transport xmlns='urn:xmpp:jingle:transports:ibb:1'/>`` (XEP-0261)."""

    sid: str
    block_size: int = 4096

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= MAX_BLOCK_SIZE:
            raise _bad("IBB block-size out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class Encrypted:
    """``<encrypted xmlns='urn:xfer:jingle:otr:1' transfer-id='hex'/>``."""

    transfer_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """One ``<content/>``; ``description`` is None for other applications,
    ``transport`` None for transports xfer does not know."""

    name: str
    creator: Role = Role.INITIATOR
    senders: str = "initiator"
    description: FileDescription | None = None
    #: The description's namespace, even when xfer does not understand it.
    application: str | None = None
    transport: S5BTransport | IBBTransport | None = None
    #: The transport's namespace, even when xfer does not understand it.
    transport_ns: str | None = None
    encrypted: Encrypted | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Jingle:
    """One ``<jingle/>`` element."""

    action: Action
    sid: str
    initiator: str | None = None
    responder: str | None = None
    contents: tuple[Content, ...] = ()
    reason: Reason | None = None
    reason_text: str | None = None
    #: session-info payload: a received or checksum announcement.
    info: Received | Checksum | None = None

    @property
    def content(self) -> Content | None:
        """The first content, if any (xfer offers one file per session)."""
        return self.contents[0] if self.contents else None


# -- parsing ---------------------------------------------------------------------


def _attr(el: ET.Element, name: str, *, required: bool = False) -> str | None:
    value = el.get(name)
    if value is None:
        if required:
            raise _bad(f"<{_local(el.tag)}/> lacks {name}")
        return None
    if len(value) > MAX_ATTR:
        raise _bad(f"{name} is too long")
    return value


def _text(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    text = el.text or ""
    if len(text) > MAX_TEXT:
        raise _bad(f"<{_local(el.tag)}/> text is too long")
    return text


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _int(text: str | None, what: str, low: int, high: int) -> int:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 20:
        raise _bad(f"{what} is not a number")
    value = int(text, 10)
    if not low <= value <= high:
        raise _bad(f"{what} out of range")
    return value


def _sid(text: str | None, what: str = "sid") -> str:
    if not text or len(text) > MAX_SID:
        raise _bad(f"missing or oversized {what}")
    return text


def _hashes(parent: ET.Element) -> tuple[tuple[str, bytes], ...]:
    found = parent.findall(f"{{{NS_HASHES}}}hash")
    if len(found) > MAX_HASHES:
        raise _bad("too many hashes")
    out = []
    for h in found:
        algo = _attr(h, "algo", required=True)
        assert algo is not None
        try:
            digest = base64.b64decode(_text(h) or "", validate=True)
        except (binascii.Error, ValueError):
            raise _bad("a hash is not base64") from None
        out.append((algo, digest))
    return tuple(out)


def _file(el: ET.Element) -> FileDescription:
    def child(name: str) -> str | None:
        return _text(el.find(f"{{{NS_FILE_TRANSFER}}}{name}"))

    range_el = el.find(f"{{{NS_FILE_TRANSFER}}}range")
    rng = None
    if range_el is not None:
        offset = _int(range_el.get("offset", "0"), "range offset", 0, 1 << 62)
        length = range_el.get("length")
        rng = Range(
            offset=offset,
            length=None if length is None else _int(length, "length", 0, 1 << 62),
        )
    try:
        return FileDescription(
            name=child("name") or "",
            size=_int(child("size"), "file size", 0, 1 << 62),
            media_type=child("media-type") or "application/octet-stream",
            date=child("date"),
            desc=child("desc"),
            hashes=_hashes(el),
            range=rng,
        )
    except JingleError:
        raise
    except RemoteProtocolError as exc:
        raise _bad(str(exc)) from None


def _candidate(el: ET.Element) -> Candidate:
    kind = _attr(el, "type") or "direct"
    try:
        ctype = CandidateType[kind.upper()]
    except KeyError:
        raise _bad(f"unknown candidate type {kind!r}") from None
    return Candidate(
        cid=_sid(_attr(el, "cid", required=True), "cid"),
        host=_attr(el, "host", required=True) or "",
        port=_int(_attr(el, "port") or "1080", "port", 1, 65535),
        jid=_attr(el, "jid", required=True) or "",
        priority=_int(_attr(el, "priority", required=True), "priority", 0, 2**32 - 1),
        type=ctype,
    )


def _s5b(el: ET.Element) -> S5BTransport:
    mode = el.get("mode")
    if mode not in (None, "tcp"):
        raise _bad("only mode='tcp' SOCKS5 transports are supported")
    found = el.findall(f"{{{NS_S5B}}}candidate")
    if len(found) > MAX_CANDIDATES:
        raise _bad("too many candidates")
    used = el.find(f"{{{NS_S5B}}}candidate-used")
    activated = el.find(f"{{{NS_S5B}}}activated")
    return S5BTransport(
        sid=_sid(_attr(el, "sid", required=True)),
        dstaddr=_attr(el, "dstaddr"),
        mode=mode,
        candidates=tuple(_candidate(c) for c in found),
        candidate_used=None if used is None else _sid(used.get("cid"), "cid"),
        candidate_error=el.find(f"{{{NS_S5B}}}candidate-error") is not None,
        activated=None if activated is None else _sid(activated.get("cid"), "cid"),
        proxy_error=el.find(f"{{{NS_S5B}}}proxy-error") is not None,
    )


def _ibb(el: ET.Element) -> IBBTransport:
    return IBBTransport(
        sid=_sid(_attr(el, "sid", required=True)),
        block_size=_int(el.get("block-size", "4096"), "block-size", 1, MAX_BLOCK_SIZE),
    )


def _encrypted(el: ET.Element) -> Encrypted:
    raw = _attr(el, "transfer-id", required=True) or ""
    try:
        tid = bytes.fromhex(raw)
    except ValueError:
        raise _bad("transfer-id is not hex") from None
    if len(tid) != 16 or len(raw) != 32:
        raise _bad("transfer-id is 16 bytes (32 hex digits)")
    return Encrypted(transfer_id=tid)


def _content(el: ET.Element) -> Content:
    creator = _attr(el, "creator") or "initiator"
    if creator not in ("initiator", "responder"):
        raise _bad("content creator must be initiator or responder")
    senders = _attr(el, "senders") or "both"
    if senders not in _SENDERS:
        raise _bad("unknown senders value")
    description: FileDescription | None = None
    application: str | None = None
    transport: S5BTransport | IBBTransport | None = None
    transport_ns: str | None = None
    encrypted: Encrypted | None = None
    for child in el:
        ns, local = _ns(child.tag), _local(child.tag)
        if local == "description":
            application = ns
            if ns == NS_FILE_TRANSFER:
                file_el = child.find(f"{{{NS_FILE_TRANSFER}}}file")
                if file_el is None:
                    raise _bad("a file-transfer description needs a <file/>")
                description = _file(file_el)
        elif local == "transport":
            transport_ns = ns
            if ns == NS_S5B:
                transport = _s5b(child)
            elif ns == NS_IBB:
                transport = _ibb(child)
        elif local == "encrypted" and ns == NS_ENCRYPTED:
            encrypted = _encrypted(child)
    return Content(
        name=_sid(_attr(el, "name", required=True), "content name"),
        creator=Role(creator),
        senders=senders,
        description=description,
        application=application,
        transport=transport,
        transport_ns=transport_ns,
        encrypted=encrypted,
    )


def _reason(el: ET.Element | None) -> tuple[Reason | None, str | None]:
    if el is None:
        return None, None
    reason = text = None
    for child in el:
        local = _local(child.tag)
        if local == "text":
            text = _text(child)
        elif reason is None:
            try:
                reason = Reason(local)
            except ValueError:
                reason = Reason.GENERAL_ERROR  # unknown reasons read as general
    if reason is None:
        raise _bad("a <reason/> names no condition")
    return reason, text


def _info(el: ET.Element) -> Received | Checksum | None:
    for child in el:
        if _ns(child.tag) != NS_FILE_TRANSFER:
            continue
        name = _sid(child.get("name"), "content name")
        if _local(child.tag) == "received":
            return Received(content=name)
        if _local(child.tag) == "checksum":
            file_el = child.find(f"{{{NS_FILE_TRANSFER}}}file")
            hashes = _hashes(file_el) if file_el is not None else ()
            try:
                return Checksum(content=name, hashes=hashes)
            except Exception as exc:
                raise _bad(f"invalid checksum: {exc}") from None
    return None


def parse(el: ET.Element) -> Jingle:
    """Parse a ``<jingle/>`` element.

    Raises:
        JingleError: ``bad-request``: the element is malformed or oversized
            (``feature-not-implemented`` for an unknown action).
    """
    if el.tag != f"{{{NS_JINGLE}}}jingle":
        raise _bad("not a urn:xmpp:jingle:1 <jingle/> element")
    raw_action = _attr(el, "action", required=True)
    try:
        action = Action(raw_action)
    except ValueError:
        raise JingleError(
            f"unknown Jingle action {raw_action!r}",
            condition="feature-not-implemented",
            jingle_condition="unsupported-info",
        ) from None
    contents = el.findall(f"{{{NS_JINGLE}}}content")
    if len(contents) > MAX_CONTENTS:
        raise _bad("too many contents")
    reason, text = _reason(el.find(f"{{{NS_JINGLE}}}reason"))
    return Jingle(
        action=action,
        sid=_sid(_attr(el, "sid", required=True)),
        initiator=_attr(el, "initiator"),
        responder=_attr(el, "responder"),
        contents=tuple(_content(c) for c in contents),
        reason=reason,
        reason_text=text,
        info=_info(el) if action is Action.SESSION_INFO else None,
    )


# -- building --------------------------------------------------------------------


def _sub(parent: ET.Element, ns: str, local: str, /, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{ns}}}{local}", attrs)


def _build_file(parent: ET.Element, desc: FileDescription) -> None:
    f = _sub(parent, NS_FILE_TRANSFER, "file")
    if desc.date is not None:
        _sub(f, NS_FILE_TRANSFER, "date").text = desc.date
    if desc.desc is not None:
        _sub(f, NS_FILE_TRANSFER, "desc").text = desc.desc
    _sub(f, NS_FILE_TRANSFER, "media-type").text = desc.media_type
    _sub(f, NS_FILE_TRANSFER, "name").text = desc.name
    _sub(f, NS_FILE_TRANSFER, "size").text = str(desc.size)
    if desc.range is not None:
        attrs = {"offset": str(desc.range.offset)}
        if desc.range.length is not None:
            attrs["length"] = str(desc.range.length)
        _sub(f, NS_FILE_TRANSFER, "range", **attrs)
    for algo, digest in desc.hashes:
        _sub(f, NS_HASHES, "hash", algo=algo).text = base64.b64encode(digest).decode()


def _build_transport(parent: ET.Element, t: S5BTransport | IBBTransport) -> None:
    if isinstance(t, IBBTransport):
        _sub(
            parent, NS_IBB, "transport", sid=t.sid, **{"block-size": str(t.block_size)}
        )
        return
    attrs = {"sid": t.sid}
    if t.mode is not None:
        attrs["mode"] = t.mode
    if t.dstaddr is not None:
        attrs["dstaddr"] = t.dstaddr
    el = _sub(parent, NS_S5B, "transport", **attrs)
    for c in t.candidates:
        _sub(
            el,
            NS_S5B,
            "candidate",
            cid=c.cid,
            host=c.host,
            jid=c.jid,
            port=str(c.port),
            priority=str(c.priority),
            type=c.type.label,
        )
    if t.candidate_used is not None:
        _sub(el, NS_S5B, "candidate-used", cid=t.candidate_used)
    if t.candidate_error:
        _sub(el, NS_S5B, "candidate-error")
    if t.activated is not None:
        _sub(el, NS_S5B, "activated", cid=t.activated)
    if t.proxy_error:
        _sub(el, NS_S5B, "proxy-error")


def build(j: Jingle) -> ET.Element:
    """The ``<jingle/>`` element for ``j``."""
    attrs = {"action": j.action.value, "sid": j.sid}
    if j.initiator is not None:
        attrs["initiator"] = j.initiator
    if j.responder is not None:
        attrs["responder"] = j.responder
    root = ET.Element(f"{{{NS_JINGLE}}}jingle", attrs)
    for c in j.contents:
        el = _sub(root, NS_JINGLE, "content", creator=c.creator.value, name=c.name)
        el.set("senders", c.senders)
        if c.description is not None:
            _build_file(_sub(el, NS_FILE_TRANSFER, "description"), c.description)
        if c.transport is not None:
            _build_transport(el, c.transport)
        if c.encrypted is not None:
            _sub(
                el,
                NS_ENCRYPTED,
                "encrypted",
                **{"transfer-id": c.encrypted.transfer_id.hex()},
            )
    if j.reason is not None:
        reason = _sub(root, NS_JINGLE, "reason")
        _sub(reason, NS_JINGLE, j.reason.value)
        if j.reason_text:
            _sub(reason, NS_JINGLE, "text").text = j.reason_text
    if isinstance(j.info, Received):
        _sub(
            root, NS_FILE_TRANSFER, "received", creator="initiator", name=j.info.content
        )
    elif isinstance(j.info, Checksum):
        cs = _sub(
            root, NS_FILE_TRANSFER, "checksum", creator="initiator", name=j.info.content
        )
        f = _sub(cs, NS_FILE_TRANSFER, "file")
        for algo, digest in j.info.hashes:
            _sub(f, NS_HASHES, "hash", algo=algo).text = base64.b64encode(
                digest
            ).decode()
    return root
