"""What else peers send reaches an xfer receiver, through a real Prosody.

A plain slixmpp client (no xfer plugin: its OTR is the sans-I/O
:class:`~xfer.otr.account.Account`, driven by the test) offers a file by
legacy stream initiation (XEP-0096) and by plain Jingle (XEP-0234), and
says something inside OTR. The receiver refuses both offers with xfer's
reason and hands all three to the application as notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError
from slixmpp.stanza import Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.stanzabase import StanzaBase

import xfer
from tests.integration.conftest import ACCOUNTS, login
from xfer.jingle import Action, Role
from xfer.jingle.files import FileDescription
from xfer.jingle.wire import (
    NS_FILE_TRANSFER,
    NS_JINGLE,
    Content,
    IBBTransport,
    Jingle,
    build,
    parse,
)
from xfer.notices import VIA_JINGLE, VIA_SI, PeerMessage, RefusedOffer
from xfer.otr import Policy
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.otr.session import MessageState
from xfer.otr.trust import Verification
from xfer.testing.prosody import LocalProsody
from xfer.transfer.policy import ENCRYPTED_ONLY
from xfer.xmpp.client import XferClient

pytestmark = pytest.mark.integration

NS_SI = "http://jabber.org/protocol/si"
NS_SI_FILE = "http://jabber.org/protocol/si/profile/file-transfer"


class PlainPeer:
    """A slixmpp client without xfer's plugins, as another XMPP client is."""

    def __init__(self, xmpp: XferClient) -> None:
        self.xmpp = xmpp
        self.key = PrivateKey.generate()
        self.otr = Account(self.key, our_tag=0x3333_3333, policy=Policy())
        self.terminates: asyncio.Queue[Jingle] = asyncio.Queue()
        xmpp.add_event_handler("message", self._on_message)
        xmpp.register_handler(
            Callback(
                "plain jingle",
                MatchXPath(f"{{jabber:client}}iq/{{{NS_JINGLE}}}jingle"),
                self._on_jingle,
            )
        )

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    async def si_offer(self, to: str, name: str, size: int) -> IqError:
        """Offer a file by XEP-0096; the error it was answered with."""
        iq = self.xmpp.make_iq_set(ito=to)
        si = ET.SubElement(iq.xml, f"{{{NS_SI}}}si", id="s5", profile=NS_SI_FILE)
        ET.SubElement(si, f"{{{NS_SI_FILE}}}file", name=name, size=str(size))
        with pytest.raises(IqError) as refused:
            await iq.send(timeout=10)
        return refused.value

    async def jingle_offer(self, to: str, name: str, size: int) -> Jingle:
        """Offer a file by plain Jingle; the session-terminate it ended with."""
        offer = Jingle(
            action=Action.SESSION_INITIATE,
            sid="plain1",
            initiator=self.jid,
            contents=(
                Content(
                    name="file",
                    creator=Role.INITIATOR,
                    senders="initiator",
                    description=FileDescription(name=name, size=size),
                    application=NS_FILE_TRANSFER,
                    transport=IBBTransport(sid="ibb-plain1", block_size=4096),
                ),
            ),
        )
        iq = self.xmpp.make_iq_set(ito=to)
        iq.xml.append(build(offer))
        await iq.send(timeout=10)  # acknowledged...
        return await asyncio.wait_for(self.terminates.get(), 10)  # ...then ended

    async def say(self, to: str, text: str) -> None:
        """Set up OTR with ``to`` and say ``text`` in it."""
        self.otr.session(to).start_ake()
        self._flush()
        for _ in range(500):
            session = self.otr.best(to)
            if session is not None and session.state is MessageState.ENCRYPTED:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no OTR session")
        session.send(text)
        self._flush()

    def _flush(self) -> None:
        for to, body in self.otr.data_to_send():
            self.xmpp.send_message(mto=to, mbody=body, mtype="chat")

    def _on_message(self, msg: StanzaBase) -> None:
        assert isinstance(msg, Message)
        body = msg["body"]
        if isinstance(body, str) and body.startswith("?OTR"):
            self.otr.receive(msg["from"].full, body)
            self._flush()

    def _on_jingle(self, iq: StanzaBase) -> None:
        el = iq.xml.find(f"{{{NS_JINGLE}}}jingle")
        assert el is not None
        iq.reply().send()
        jingle = parse(el)
        if jingle.action is Action.SESSION_TERMINATE:
            self.terminates.put_nowait(jingle)


@pytest.fixture
async def plain(prosody: LocalProsody) -> AsyncIterator[PlainPeer]:
    xmpp = await login(prosody, "carol", "plain")
    yield PlainPeer(xmpp)
    await xmpp.stop()


async def test_offers_and_text_from_a_plain_client_become_notices(
    prosody: LocalProsody, plain: PlainPeer, tmp_path: Path
) -> None:
    receiver = await xfer.connect(
        f"dave@{prosody.domain}/recv",
        ACCOUNTS["dave"],
        identity=tmp_path / "dave-id",
        host="127.0.0.1",
        port=prosody.c2s_port,
        tls="none",
    )
    raised: list[object] = []
    receiver.xmpp.add_event_handler("xfer_notice", raised.append)
    try:
        hostile = "\u202egpj.exe\x9b2J.pdf"  # (XML cannot carry ESC)

        # Legacy SI: answered forbidden with the reason, not "No handlers".
        error = await plain.si_offer(receiver.jid, hostile, 1_234_567)
        assert error.iq["error"]["condition"] == "forbidden"
        assert error.iq["error"]["type"] == "cancel"
        assert error.iq["error"]["text"] == ENCRYPTED_ONLY
        assert await receiver.next_notice(timeout=10) == RefusedOffer(
            peer=plain.jid,
            name=hostile,
            size=1_234_567,
            via=VIA_SI,
            reason=ENCRYPTED_ONLY,
        )

        # Plain Jingle: acknowledged, then security-error with the reason.
        ended = await plain.jingle_offer(receiver.jid, "x.pdf", 2_000_000)
        assert ended.reason is not None
        assert (ended.reason.value, ended.reason_text) == (
            "security-error",
            ENCRYPTED_ONLY,
        )
        assert await receiver.next_notice(timeout=10) == RefusedOffer(
            peer=plain.jid,
            name="x.pdf",
            size=2_000_000,
            via=VIA_JINGLE,
            reason=ENCRYPTED_ONLY,
        )

        # Text inside OTR, from a fingerprint the receiver trusts.
        otr = receiver.xmpp.plugin["xfer_otr"]
        otr.trust.trust(
            plain.jid, plain.key.public.fingerprint, Verification.MANUAL, now=0
        )
        await plain.say(receiver.jid, "hello \x1b[2J from carol")
        assert await receiver.next_notice(timeout=10) == PeerMessage(
            peer=plain.jid,
            text="hello \x1b[2J from carol",
            fingerprint=plain.key.public.fingerprint,
            trusted=True,
        )
        assert len(raised) == 3
    finally:
        with contextlib.suppress(Exception):
            await receiver.close()
