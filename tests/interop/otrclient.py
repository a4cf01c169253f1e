"""A libotr client on XMPP: slixmpp for the stanzas, libotr 4.1 for OTR.

:class:`OTRClientPeer` stands for the libotr clients (Pidgin, mcabber and
others) in the integration tests: an account on the test server whose
``<message/>`` bodies go through a :class:`~tests.interop.libotr.LibOTRPeer`.
Whatever libotr injects is sent as a chat message; what it hands back is
recorded in :attr:`OTRClientPeer.received`, and its SMP and message events in
:attr:`OTRClientPeer.events`.

libotr's contexts are kept per bare JID by default, as by clients that keep
one conversation per contact (the instance tags tell the contact's clients
apart); ``bare_contexts=False`` keeps one per full JID instead. A message for
one instance goes to the full JID that instance last wrote from
(``route_by_instance``; else to the address libotr names), the rest (a
query, a D-H Commit to any instance) to the address the test gave.

The tests use the typed calls: :meth:`~OTRClientPeer.query`,
:meth:`~OTRClientPeer.send` (inside OTR, or plain text with libotr's
whitespace tag), the ``smp_*`` calls, :meth:`~OTRClientPeer.symkey`,
:meth:`~OTRClientPeer.end`; and what the user sees:
:meth:`~OTRClientPeer.msgstate`, :meth:`~OTRClientPeer.smp_events`,
:meth:`~OTRClientPeer.errors`, :attr:`~OTRClientPeer.received`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.interop.libotr import (
    INSTAG_BEST,
    MSGSTATE,
    POLICY_DEFAULT,
    LibOTRPeer,
)
from xfer.xmpp.client import XferClient, connect

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from slixmpp import ClientXMPP
    from slixmpp.stanza import Message

    from xfer.otr.crypto import PrivateKey
    from xfer.testing.prosody import LocalProsody

__all__ = ["OTR_ERRORS", "OTRClientPeer", "Received", "eventually", "online"]

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

#: libotr message events that mean something went wrong with OTR.
OTR_ERRORS = frozenset(
    {
        "encryption_error",
        "setup_error",
        "rcvdmsg_not_in_private",
        "rcvdmsg_unreadable",
        "rcvdmsg_malformed",
        "rcvdmsg_general_err",
        "rcvdmsg_unrecognized",
    }
)


@dataclass(frozen=True, slots=True)
class Received:
    """A message as libotr's user sees it (decrypted, its whitespace tag gone)."""

    frm: str
    text: str
    encrypted: bool


def otr_tags(body: str) -> tuple[int, int] | None:
    """(sender, receiver) instance tags of an OTR v3 message, else None."""
    try:
        if body.startswith("?OTR|"):  # a v3 fragment: ?OTR|sender|receiver,...
            sender, rest = body[5:].split("|", 1)
            return int(sender, 16), int(rest.split(",", 1)[0], 16)
        if body.startswith("?OTR:"):
            raw = base64.b64decode(body[5:21], validate=True)
            if raw[:2] == b"\x00\x03":
                return int.from_bytes(raw[3:7], "big"), int.from_bytes(raw[7:11], "big")
    except (ValueError, binascii.Error):
        pass
    return None


class OTRClientPeer:
    """One libotr user logged in on the test server (see the module doc)."""

    def __init__(
        self, xmpp: XferClient, otr: LibOTRPeer, *, bare_contexts: bool = True
    ) -> None:
        self.xmpp = xmpp
        self.otr = otr
        self.bare_contexts = bare_contexts
        #: Send a message for one instance to the full JID it wrote from
        #: (else to the address libotr names, a bare JID with bare contexts).
        self.route_by_instance = True
        self.received: list[Received] = []
        #: (to, body) of every message we sent, as it went out.
        self.sent: list[tuple[str, str]] = []
        #: (contact, instance tag) -> the full JID that instance wrote from.
        self._where: dict[tuple[str, int], str] = {}
        xmpp.add_event_handler("message", self._on_message)

    @classmethod
    async def connect(
        cls,
        server: LocalProsody,
        user: str,
        resource: str,
        folder: Path,
        *,
        key: PrivateKey,
        instag: int,
        policy: int = POLICY_DEFAULT,
        bare_contexts: bool = True,
    ) -> OTRClientPeer:
        """Log ``user`` in as ``resource``; libotr's files go to ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        account = f"{user}@{server.domain}"
        otr = LibOTRPeer(folder, account=account, key=key, instag=instag, policy=policy)
        xmpp = await connect(
            f"{account}/{resource}",
            server.accounts[user],
            "127.0.0.1",
            server.c2s_port,
            tls="none",
        )
        peer = cls(xmpp, otr, bare_contexts=bare_contexts)
        await online(xmpp)
        return peer

    async def stop(self) -> None:
        self.xmpp.del_event_handler("message", self._on_message)
        await self.xmpp.stop()

    @property
    def jid(self) -> str:
        """Our full JID."""
        return str(self.xmpp.boundjid.full)

    @property
    def events(self) -> list[tuple[Any, ...]]:
        return self.otr.events

    def contact(self, jid: str) -> str:
        """The libotr username (the context) for messages from ``jid``."""
        return jid.split("/", 1)[0] if self.bare_contexts else jid

    # -- XMPP <-> libotr -----------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        body = msg["body"]
        if msg["type"] not in ("chat", "normal") or not body:
            return
        frm = str(msg["from"].full)
        contact = self.contact(frm)
        tags = otr_tags(body)
        if tags is not None:
            self._where[contact, tags[0]] = frm
        ignore, text, _tlvs = self.otr.receive(contact, body)
        if not ignore:
            encrypted = body.startswith(("?OTR:", "?OTR|"))
            self.received.append(
                Received(frm, body if text is None else text, encrypted)
            )
        self._flush()

    def _flush(self) -> None:
        out, self.otr.outbox[:] = list(self.otr.outbox), []
        for to, body in out:
            tags = otr_tags(body)
            if tags is not None and self.route_by_instance:
                self._send(self._where.get((to, tags[1]), to), body)
            else:
                self._send(to, body)

    def _send(self, to: str, body: str) -> None:
        self.sent.append((to, body))
        self.xmpp.make_message(mto=to, mbody=body, mtype="chat").send()

    # -- what the user does --------------------------------------------------------

    def query(self, to: str) -> None:
        """Ask ``to`` (a bare or full JID) for OTR: libotr's query message."""
        self.otr.query(to)
        self._flush()

    def send(self, to: str, text: str, instance: int = INSTAG_BEST) -> None:
        """Send ``text`` as libotr does: inside OTR when encrypted, else as
        plain text (with a whitespace tag, if the policy sends them)."""
        self.otr.send(self.contact(to), text, instance)
        self._flush()

    def send_plain(self, to: str, body: str) -> None:
        """Send ``body`` as it is, without libotr."""
        self._send(to, body)

    def context(self, peer: str, instance: int = INSTAG_BEST) -> Any:
        return self.otr.context(self.contact(peer), instance)

    def _secure_context(self, peer: str, instance: int) -> Any:
        ctx = self.context(peer, instance)
        if ctx is None:
            raise LookupError(f"libotr has no context with {peer} ({instance:#x})")
        return ctx

    def smp_start(
        self,
        peer: str,
        secret: bytes,
        question: str | None = None,
        instance: int = INSTAG_BEST,
    ) -> None:
        self.otr.smp_start(secret, question, self._secure_context(peer, instance))
        self._flush()

    def smp_respond(
        self, peer: str, secret: bytes, instance: int = INSTAG_BEST
    ) -> None:
        self.otr.smp_respond(secret, self._secure_context(peer, instance))
        self._flush()

    def smp_abort(self, peer: str, instance: int = INSTAG_BEST) -> None:
        self.otr.smp_abort(self._secure_context(peer, instance))
        self._flush()

    def symkey(
        self, peer: str, use: int, data: bytes, instance: int = INSTAG_BEST
    ) -> bytes:
        """Send TLV 8 (``use``, ``data``); return the extra symmetric key."""
        key = self.otr.symkey(use, data, self._secure_context(peer, instance))
        self._flush()
        return key

    def end(self, peer: str, instance: int = INSTAG_BEST) -> None:
        """End the private conversation (TLV 1)."""
        ctx = self._secure_context(peer, instance)
        self.otr.disconnect(self.contact(peer), ctx.contents.their_instance)
        self._flush()

    # -- what the user sees --------------------------------------------------------

    def msgstate(self, peer: str, instance: int = INSTAG_BEST) -> str:
        ctx = self.context(peer, instance)
        return "plaintext" if ctx is None else MSGSTATE[ctx.contents.msgstate]

    def secure_instances(self) -> set[int]:
        """The peer instance tags libotr went secure with."""
        return {e[1] for e in self.events if e[0] == "gone_secure"}

    def smp_events(self) -> list[tuple[str, str | None]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "smp"]

    def errors(self) -> list[tuple[Any, ...]]:
        """libotr's message events that report an OTR failure."""
        return [e for e in self.events if e[0] == "msg_event" and e[1] in OTR_ERRORS]

    def texts(self, *, encrypted: bool | None = None) -> list[str]:
        return [
            r.text
            for r in self.received
            if encrypted is None or r.encrypted is encrypted
        ]

    async def wait_for(
        self, predicate: Callable[[], object], timeout: float = 10, what: str = ""
    ) -> None:
        """Until ``predicate()`` holds; TimeoutError after ``timeout`` s."""
        await eventually(predicate, timeout, what)


async def online(xmpp: ClientXMPP) -> None:
    """Until the server has taken our initial presence: messages to our bare
    JID reach us from then on (a server handles one client's stanzas in
    order, so the answer to an IQ sent after the presence tells)."""
    iq = xmpp.make_iq_get(queryxmlns=NS_DISCO_INFO, ito=xmpp.boundjid.domain)
    await iq.send(timeout=10)


async def eventually(
    predicate: Callable[[], object], timeout: float = 10, what: str = ""
) -> None:
    """Poll ``predicate`` until it holds; TimeoutError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what or predicate}")
        await asyncio.sleep(0.02)
