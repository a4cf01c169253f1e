"""Which message errors count as bounces of our OTR messages
(``xfer/xmpp/outbox.py``): only the first error that names one of ours by
its id, from where it went. A server (or anyone who can send us a message
error) forging one for a message never sent, in another JID's name, or a
second time, changes nothing; while an offer waits for its answer, such a
forgery does not end the wait, and a real bounce does."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from slixmpp.stanza import Message

import xfer.xmpp.otr as otr_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase, otr_keys
from tests.adapters.xmpp.test_transfer_sending import SendingCase
from xfer.errors import PeerOffline
from xfer.jingle import Action
from xfer.otr.trust import TrustStore
from xfer.xmpp.outbox import REMEMBERED

BARE_PEER = PEER.split("/", 1)[0]
OTHER = "carol@example.org/c"


def error(msg_id: str | None, frm: str, condition: str = "service-unavailable") -> str:
    ident = "" if msg_id is None else f' id="{msg_id}"'
    return (
        f'<message type="error" from="{frm}" to="{ME}"{ident}>'
        f'<error type="cancel"><{condition} '
        'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>'
    )


class TestBounces(StanzaCase):
    plugins: ClassVar = (
        (
            "xfer_otr",
            otr_plugin,
            {"private_key": otr_keys()[0], "trust_store": TrustStore()},
        ),
    )

    def setUp(self) -> None:
        super().setUp()
        self.bounces: list[tuple[str, str]] = []
        self.xmpp.add_event_handler("xfer_otr_bounced", self.bounces.append)
        self.otr = self.plugin("xfer_otr")

    def sent_otr(self, peer: str) -> Message:
        """Start a key exchange with ``peer``; our D-H Commit (or query)."""
        self.start(self.otr.secure(peer, timeout=30))
        msg = self.sent()
        assert msg["body"].startswith("?OTR")
        assert msg["to"].full == peer
        return msg

    def test_each_otr_message_has_an_id_of_its_own(self) -> None:
        first = self.sent_otr(PEER)
        second = self.sent_otr(OTHER)
        assert first["id"]
        assert second["id"]
        assert first["id"] != second["id"]

    def test_only_the_first_bounce_of_a_message_of_ours_counts(self) -> None:
        msg = self.sent_otr(PEER)
        self.recv(error("not-an-id-of-ours", PEER, "item-not-found"))
        self.recv(error(None, PEER, "item-not-found"))
        self.recv(error(msg["id"], OTHER, "item-not-found"))
        self.recv(error(msg["id"], f"{BARE_PEER}/elsewhere", "item-not-found"))
        self.wait_()
        assert self.bounces == []
        self.recv(error(msg["id"], PEER))
        self.recv(error(msg["id"], PEER, "item-not-found"))  # replayed
        self.wait_()
        assert self.bounces == [(PEER, "service-unavailable")]

    def test_a_bounce_from_the_bare_jid_or_the_server_names_the_full_jid(
        self,
    ) -> None:
        one = self.sent_otr(PEER)
        self.recv(error(one["id"], BARE_PEER, "recipient-unavailable"))
        self.wait_()
        assert self.bounces == [(PEER, "recipient-unavailable")]
        two = self.sent_otr(OTHER)
        self.recv(error(two["id"], "example.org", "remote-server-not-found"))
        self.wait_()
        assert self.bounces[1:] == [(OTHER, "remote-server-not-found")]

    def test_only_the_latest_messages_are_remembered(self) -> None:
        first = self.sent_otr(PEER)
        outbox = self.otr._outbox
        for n in range(REMEMBERED):
            outbox.send(f"dave@example.org/{n}", "?OTR filler")
        self.all_sent()
        assert len(outbox._sent) == REMEMBERED
        self.recv(error(first["id"], PEER))
        self.wait_()
        assert self.bounces == []


class TestForgedBouncesWhileAnOfferWaits(SendingCase):
    def test_forged_bounces_do_not_end_the_wait_and_a_real_one_does(self) -> None:
        task = self.send()
        self.next_jingle(Action.SESSION_INITIATE)  # never answered
        offer_id = self.otr_ids[-1]
        for forged in (
            error("f0r9ed", PEER, "item-not-found"),
            error(offer_id, OTHER, "item-not-found"),
        ):
            self.recv(forged)
            self.wait_(0.05)
            assert not task.done()
        self.recv(error(offer_id, PEER))
        end, _ = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(end)
        with pytest.raises(PeerOffline, match="service-unavailable"):
            self.run_coro(asyncio.wait_for(task, 5))
