"""The ``xfer_xep_0166`` plugin through stanzas: how incoming Jingle IQs are
routed and answered, what reaches the application, and when directed
presence goes out."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

import xfer.xmpp.jingle as jingle_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase
from xfer.errors import PeerGone, RemoteProtocolError, TransferDeclined
from xfer.jingle import Action, JingleError, Reason, Role
from xfer.jingle.files import FileDescription
from xfer.jingle.wire import (
    NS_JINGLE,
    NS_JINGLE_ERRORS,
    Content,
    IBBTransport,
    Jingle,
    build,
    parse,
)

OTHER = "peer@example.org/phone"


def offer(sid: str = "s1", initiator: str = PEER) -> Jingle:
    return Jingle(
        action=Action.SESSION_INITIATE,
        sid=sid,
        initiator=initiator,
        contents=(
            Content(
                name="file",
                creator=Role.INITIATOR,
                senders="initiator",
                description=FileDescription(name="x.xfer", size=10),
                application="urn:xmpp:jingle:apps:file-transfer:5",
                transport=IBBTransport(sid="i1"),
                transport_ns="urn:xmpp:jingle:transports:ibb:1",
            ),
        ),
    )


def terminate(sid: str = "s1", reason: Reason = Reason.DECLINE) -> Jingle:
    return Jingle(action=Action.SESSION_TERMINATE, sid=sid, reason=reason)


def iq(jingle: Jingle, iq_id: str, *, kind: str = "set", frm: str = PEER) -> str:
    payload = ET.tostring(build(jingle), encoding="unicode")
    return f'<iq type="{kind}" id="{iq_id}" from="{frm}" to="{ME}">{payload}</iq>'


class JingleCase(StanzaCase):
    plugins = (("xfer_xep_0166", jingle_plugin, {}),)

    def setUp(self) -> None:
        super().setUp()
        self.jingle = self.plugin("xfer_xep_0166")
        self.offers: list[tuple[jingle_plugin.JingleSessionIO, Jingle]] = []
        self.jingle.on_initiate = lambda s, j: self.offers.append((s, j))

    def assert_error(self, iq_id: str, condition: str, etype: str) -> ET.Element:
        reply = self.sent()
        assert (reply["type"], reply["id"], reply["to"].full) == ("error", iq_id, PEER)
        assert reply["error"]["condition"] == condition
        assert reply["error"]["type"] == etype
        return reply.xml

    def assert_result(self, iq_id: str) -> None:
        reply = self.sent()
        assert (reply["type"], reply["id"]) == ("result", iq_id)

    def incoming(self, sid: str = "s1") -> jingle_plugin.JingleSessionIO:
        """A session the peer started (acknowledged, handed to on_initiate)."""
        self.recv(iq(offer(sid), f"init-{sid}"))
        self.assert_result(f"init-{sid}")
        return self.offers[-1][0]

    def next_action(self, session: jingle_plugin.JingleSessionIO) -> Jingle:
        return self.run_coro(session.next(timeout=1))


class TestIncoming(JingleCase):
    def test_a_get_is_answered_bad_request(self) -> None:
        self.recv(iq(offer(), "g1", kind="get"))
        self.assert_error("g1", "bad-request", "modify")
        assert (self.offers, self.jingle.live) == ([], 0)

    def test_a_session_initiate_makes_a_responder_session(self) -> None:
        session = self.incoming()
        [(_, received)] = self.offers
        assert (session.peer, session.sid) == (PEER, "s1")
        assert session.role is Role.RESPONDER
        assert received.content.description.name == "x.xfer"
        assert self.jingle.live == 1
        assert self.jingle.offered_by("peer@example.org") == 1
        assert self.jingle.offered_by("someone@example.org") == 0

    def test_an_incoming_offer_sends_no_presence(self) -> None:
        # A stranger's offer must not learn that we are online.
        self.incoming()
        self.nothing_sent()

    def test_a_duplicate_sid_is_a_conflict(self) -> None:
        self.incoming()
        self.recv(iq(offer(), "again"))
        self.assert_error("again", "conflict", "cancel")
        assert len(self.offers) == 1

    def test_the_same_sid_from_another_resource_is_another_session(self) -> None:
        self.incoming()
        self.recv(iq(offer(initiator=OTHER), "other", frm=OTHER))
        assert self.sent()["type"] == "result"
        assert self.jingle.live == 2

    def test_offers_beyond_max_sessions_wait(self) -> None:
        self.jingle.config["max_sessions"] = 1
        self.incoming("s1")
        self.recv(iq(offer("s2"), "full"))
        self.assert_error("full", "resource-constraint", "wait")
        assert len(self.offers) == 1

    def test_an_unknown_sid_is_item_not_found_and_unknown_session(self) -> None:
        self.recv(iq(terminate("nope"), "t1"))
        xml = self.assert_error("t1", "item-not-found", "cancel")
        assert xml.find(f".//{{{NS_JINGLE_ERRORS}}}unknown-session") is not None

    def test_a_malformed_jingle_is_bad_request(self) -> None:
        self.recv(
            f'<iq type="set" id="m1" from="{PEER}" to="{ME}">'
            f'<jingle xmlns="{NS_JINGLE}" action="session-initiate"/></iq>'
        )
        self.assert_error("m1", "bad-request", "modify")
        assert self.offers == []

    def test_an_out_of_order_action_breaks_the_session(self) -> None:
        session = self.incoming()
        # Only the responder accepts: the initiator's accept is out of order.
        accept = Jingle(action=Action.SESSION_ACCEPT, sid="s1", responder=ME)
        self.recv(iq(accept, "acc"))
        reply = self.sent()
        assert reply["type"] == "error"
        with pytest.raises(JingleError):
            self.next_action(session)

    def test_a_terminate_reaches_the_session_and_ends_it(self) -> None:
        session = self.incoming()
        self.recv(iq(terminate(), "t1"))
        self.assert_result("t1")
        assert session.ending.is_set()
        got = self.next_action(session)
        assert got.reason is Reason.DECLINE
        assert session.terminated is got
        assert self.jingle.live == 0
        # The sid is free again, and our own action now says why it ended.
        with pytest.raises(TransferDeclined):
            self.run_coro(session.send(session.jingle(Action.SESSION_INFO)))

    def test_without_on_initiate_offers_are_terminated_unsupported(self) -> None:
        self.jingle.on_initiate = None
        self.recv(iq(offer(), "i1"))
        self.assert_result("i1")
        sent = self.sent()
        assert (sent["type"], sent["to"].full) == ("set", PEER)
        answer = parse(sent.xml.find(f"{{{NS_JINGLE}}}jingle"))
        assert answer.action is Action.SESSION_TERMINATE
        assert answer.reason is Reason.UNSUPPORTED_APPLICATIONS
        assert self.jingle.live == 0


class TestPeerGone(JingleCase):
    def unavailable(self, frm: str) -> None:
        self.recv(f'<presence type="unavailable" from="{frm}" to="{ME}"/>')

    def test_the_peer_going_offline_ends_its_sessions(self) -> None:
        session = self.incoming()
        self.unavailable(PEER)
        assert session.ending.is_set()
        with pytest.raises(PeerGone):
            self.next_action(session)

    def test_another_resource_going_offline_changes_nothing(self) -> None:
        session = self.incoming()
        self.unavailable(OTHER)
        assert not session.ending.is_set()

    def test_our_disconnection_ends_every_session(self) -> None:
        sessions = [self.incoming("s1"), self.incoming("s2")]
        self.xmpp.event("disconnected")
        self.wait_()
        for session in sessions:
            with pytest.raises(PeerGone):
                self.next_action(session)


class TestOutgoing(JingleCase):
    def test_initiate_sends_directed_presence_once_per_peer(self) -> None:
        first = self.jingle.initiate(PEER)
        presence = self.sent()
        assert (presence.name, presence["to"].full) == ("presence", PEER)
        assert presence["type"] != "unavailable"
        second = self.jingle.initiate(PEER)
        self.jingle.announce(PEER)
        self.nothing_sent()
        assert first.sid != second.sid
        assert first.role is Role.INITIATOR

    def test_a_new_server_session_announces_again(self) -> None:
        self.jingle.announce(PEER)
        self.sent()
        self.xmpp.event("session_start")
        self.wait_()
        self.jingle.announce(PEER)
        assert self.sent()["to"].full == PEER

    def start_session(self) -> jingle_plugin.JingleSessionIO:
        session = self.jingle.initiate(PEER, sid="out")
        self.sent()  # the directed presence
        return session

    def send_offer(self, session: jingle_plugin.JingleSessionIO):
        task = self.start(session.send(offer("out", initiator=ME)))
        request = self.sent()
        assert (request["type"], request["to"].full) == ("set", PEER)
        sent = parse(request.xml.find(f"{{{NS_JINGLE}}}jingle"))
        assert (sent.action, sent.sid) == (Action.SESSION_INITIATE, "out")
        return task, request["id"]

    def test_send_returns_on_the_acknowledgement(self) -> None:
        session = self.start_session()
        task, iq_id = self.send_offer(session)
        assert not task.done()
        self.recv(f'<iq type="result" id="{iq_id}" from="{PEER}" to="{ME}"/>')
        assert self.run_coro(task) is None

    def error_reply(self, iq_id: str, condition: str, extra: str = "") -> str:
        return (
            f'<iq type="error" id="{iq_id}" from="{PEER}" to="{ME}">'
            f'<error type="cancel"><{condition} '
            f'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>{extra}</error></iq>'
        )

    def test_an_error_answer_is_a_remote_protocol_error(self) -> None:
        session = self.start_session()
        task, iq_id = self.send_offer(session)
        self.recv(self.error_reply(iq_id, "not-acceptable"))
        with pytest.raises(RemoteProtocolError) as caught:
            self.run_coro(task)
        assert str(caught.value).endswith("refused session-initiate: not-acceptable")

    def test_unknown_session_in_answer_means_the_peer_is_gone(self) -> None:
        session = self.start_session()
        task, iq_id = self.send_offer(session)
        unknown = f'<unknown-session xmlns="{NS_JINGLE_ERRORS}"/>'
        self.recv(self.error_reply(iq_id, "item-not-found", unknown))
        with pytest.raises(PeerGone):
            self.run_coro(task)

    def test_terminate_sends_the_reason_and_forgets_the_session(self) -> None:
        session = self.start_session()
        task, iq_id = self.send_offer(session)
        self.recv(f'<iq type="result" id="{iq_id}" from="{PEER}" to="{ME}"/>')
        self.run_coro(task)
        ending = self.start(session.terminate(Reason.CANCEL, "changed my mind"))
        request = self.sent()
        sent = parse(request.xml.find(f"{{{NS_JINGLE}}}jingle"))
        assert (sent.action, sent.reason, sent.reason_text) == (
            Action.SESSION_TERMINATE,
            Reason.CANCEL,
            "changed my mind",
        )
        self.recv(f'<iq type="result" id="{request["id"]}" from="{PEER}" to="{ME}"/>')
        self.run_coro(ending)
        assert self.jingle.live == 0
        # Terminating again is quiet: nothing more goes out.
        self.run_coro(session.terminate(Reason.CANCEL))
        self.nothing_sent()

    def test_terminate_does_not_wait_long_for_an_answer_that_does_not_come(
        self,
    ) -> None:
        """Over a link gone quiet: the terminate goes out, the caller goes
        on after ``wait``, and a late answer (or none) changes nothing."""
        session = self.start_session()
        task, iq_id = self.send_offer(session)
        self.recv(f'<iq type="result" id="{iq_id}" from="{PEER}" to="{ME}"/>')
        self.run_coro(task)
        ending = self.start(session.terminate(Reason.TIMEOUT, wait=0.2))
        request = self.sent()
        assert request.xml.find(f"{{{NS_JINGLE}}}jingle") is not None
        # No answer: back after 0.2 s, well before the answer's own 10 s.
        self.run_coro(asyncio.wait_for(ending, 5))
        assert self.jingle.live == 0
        assert len(jingle_plugin._ENDING) == 1  # its answer still awaited
        self.recv(f'<iq type="result" id="{request["id"]}" from="{PEER}" to="{ME}"/>')
        self.wait_()
        assert not jingle_plugin._ENDING
