"""The ``xfer_transfer`` plugin itself (``plugin.py``, ``context.py``):
what it announces in service discovery, its idea of being online (a new
session, a drop, a resumed XEP-0198 stream that must prove alive), its
identity directory, and ``next_offer``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

import xfer.xmpp.transfer as transfer_plugin
from tests.adapters.xmpp.slix import (
    ME,
    PEER,
    StanzaCase,
    TransferCase,
    iq_error,
    result,
)
from xfer.errors import TransferTimeout
from xfer.jingle.wire import NS_ENCRYPTED, NS_FILE_TRANSFER, NS_IBB, NS_JINGLE, NS_S5B
from xfer.otr.trust import TrustStore, Verification
from xfer.store import IdentityStore

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"
SERVER = "localhost"
FINGERPRINT = bytes(range(20))


class TestDiscovery(TransferCase):
    def test_disco_info_lists_what_xfer_speaks(self) -> None:
        self.recv(
            f'<iq type="get" id="d1" from="{SERVER}" to="{ME}">'
            f'<query xmlns="{NS_DISCO_INFO}"/></iq>'
        )
        reply = self.answered("d1")
        assert reply["type"] == "result"
        features = {f.get("var") for f in reply.xml.iter(f"{{{NS_DISCO_INFO}}}feature")}
        assert {NS_JINGLE, NS_FILE_TRANSFER, NS_S5B, NS_IBB, NS_ENCRYPTED} <= features


class TestLiveness(TransferCase):
    def resumed(self) -> Any:
        """The stream was resumed: we ping the server; the ping."""
        self.xmpp.event("session_resumed")
        ping = self.take(
            lambda s: s.name == "iq" and s.xml.find(f"{{{NS_PING}}}ping") is not None
        )
        assert (ping["type"], ping["to"].full) == ("get", SERVER)
        return ping

    def test_online_follows_the_session(self) -> None:
        assert not self.transfer.online.is_set()
        self.xmpp.event("session_start")
        assert self.transfer.online.is_set()
        drops = self.transfer._liveness.drops
        self.xmpp.event("disconnected")
        self.wait_()
        assert not self.transfer.online.is_set()
        assert self.transfer._liveness.drops == drops + 1

    def test_a_resumed_stream_is_online_once_the_server_answers(self) -> None:
        ping = self.resumed()
        assert not self.transfer.online.is_set()
        self.recv(result(ping["id"], frm=SERVER))
        assert self.transfer.online.is_set()

    def test_an_error_answer_is_an_answer_too(self) -> None:
        ping = self.resumed()
        self.recv(iq_error(ping["id"], "service-unavailable", frm=SERVER))
        assert self.transfer.online.is_set()

    def test_a_resumed_stream_that_stays_silent_is_dropped(self) -> None:
        self.xmpp.register_plugin("xep_0198")
        sm = self.plugin("xep_0198")
        sm.sm_id = "resumption-token"
        self.transfer.config["resume_check"] = 0.05
        self.resumed()
        self.until(self.xmpp.transport.is_closing)
        assert sm.sm_id is None  # the reconnection binds a fresh session
        assert not self.transfer.online.is_set()


class TestNextOffer(TransferCase):
    def test_no_offer_in_time_is_a_timeout(self) -> None:
        with pytest.raises(TransferTimeout, match="no file was offered"):
            self.run_coro(self.transfer.next_offer(timeout=0.01))


class TestIdentity(StanzaCase):
    """``identity``: a directory holding our key and our trust store."""

    def setUp(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="xfer-identity-"))
        self.addCleanup(shutil.rmtree, self.home, True)
        store = IdentityStore(self.home)
        self.key = store.private_key()
        trusted = TrustStore()
        trusted.trust(PEER, FINGERPRINT, Verification.MANUAL, now=0)
        store.save_trust_store(trusted)
        self.plugins = (("xfer_transfer", transfer_plugin, {"identity": self.home}),)
        super().setUp()
        self.transfer = self.plugin("xfer_transfer")

    def test_the_key_and_the_trust_come_from_the_directory(self) -> None:
        assert self.transfer.identity.directory == self.home
        ours = self.transfer.otr.account.private_key
        assert ours.public.fingerprint == self.key.public.fingerprint
        assert self.transfer.trust.is_trusted(PEER, FINGERPRINT)
        # Untrusted offers would only be refused: none is kept.
        assert self.transfer.otr.config["untrusted_offers"] == 0

    def test_a_change_of_trust_is_saved_there(self) -> None:
        other = bytes(range(1, 21))
        self.transfer.trust.trust(PEER, other, Verification.SMP, now=0)
        self.transfer.otr.config["on_trust_change"](self.transfer.trust)
        assert IdentityStore(self.home).trust_store().is_trusted(PEER, other)
