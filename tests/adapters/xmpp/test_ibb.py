"""The ``xfer_ibb`` plugin through stanzas: opens accepted or refused, data
checked packet by packet, the sender's window, closes, and failures."""

from __future__ import annotations

import base64
from typing import Any

import pytest

import xfer.xmpp.ibb as ibb_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase
from xfer.errors import ConnectionFailed, TransportError
from xfer.framing.ibb import NS

OTHER = "peer@example.org/phone"


def open_iq(
    iq_id: str, *, sid: str = "s1", block: str = "4096", frm: str = PEER
) -> str:
    return (
        f'<iq type="set" id="{iq_id}" from="{frm}" to="{ME}">'
        f'<open xmlns="{NS}" sid="{sid}" block-size="{block}" stanza="iq"/></iq>'
    )


def data_iq(iq_id: str, seq: int | str, payload: bytes, *, sid: str = "s1") -> str:
    text = base64.b64encode(payload).decode()
    return (
        f'<iq type="set" id="{iq_id}" from="{PEER}" to="{ME}">'
        f'<data xmlns="{NS}" sid="{sid}" seq="{seq}">{text}</data></iq>'
    )


def close_iq(iq_id: str, *, sid: str = "s1") -> str:
    return (
        f'<iq type="set" id="{iq_id}" from="{PEER}" to="{ME}">'
        f'<close xmlns="{NS}" sid="{sid}"/></iq>'
    )


def result(iq_id: str, *, frm: str = PEER) -> str:
    return f'<iq type="result" id="{iq_id}" from="{frm}" to="{ME}"/>'


class IBBCase(StanzaCase):
    def setUp(self) -> None:
        self.authorized: list[tuple[str, str, int]] = []
        self.plugins = (
            ("xfer_ibb", ibb_plugin, {"authorize": self.authorize, "window": 2}),
        )
        self.allow = True
        super().setUp()
        self.ibb = self.plugin("xfer_ibb")

    def authorize(self, peer: str, sid: str, block_size: int) -> bool:
        self.authorized.append((peer, sid, block_size))
        return self.allow

    def assert_reply(self, iq_id: str, kind: str, condition: str = "") -> Any:
        reply = self.sent()
        assert (reply.name, reply["type"], reply["id"]) == ("iq", kind, iq_id)
        assert reply["to"].full == PEER
        if condition:
            assert reply["error"]["condition"] == condition
        return reply

    def accepted(self, sid: str = "s1") -> ibb_plugin.IBBStream:
        """A stream the peer opened and we accepted."""
        self.recv(open_iq(f"open-{sid}", sid=sid))
        for stanza in self.all_sent():
            if stanza.name == "iq":
                assert (stanza["type"], stanza["id"]) == ("result", f"open-{sid}")
        return self.run_coro(self.ibb.accept(timeout=1))


class TestOpening(IBBCase):
    def test_an_authorized_open_is_accepted_and_announced(self) -> None:
        self.recv(open_iq("o1"))
        presence = self.sent()
        assert (presence.name, presence["to"].full) == ("presence", PEER)
        self.assert_reply("o1", "result")
        stream = self.run_coro(self.ibb.accept(timeout=1))
        assert (stream.peer, stream.sid, stream.block_size) == (PEER, "s1", 4096)
        assert self.authorized == [(PEER, "s1", 4096)]

    def test_an_unexpected_open_is_refused(self) -> None:
        self.allow = False
        self.recv(open_iq("o1"))
        self.assert_reply("o1", "error", "not-acceptable")
        self.nothing_sent()  # no presence for a refused stranger

    def test_without_authorize_every_open_is_refused(self) -> None:
        self.ibb.config["authorize"] = None
        self.recv(open_iq("o1"))
        self.assert_reply("o1", "error", "not-acceptable")

    def test_an_expected_stream_needs_no_authorization(self) -> None:
        self.allow = False

        async def expect() -> Any:
            return self.ibb.expect(PEER, "agreed")

        waiter = self.run_coro(expect())
        self.recv(open_iq("o1", sid="agreed"))
        assert waiter.done()
        assert waiter.result().sid == "agreed"
        assert self.authorized == []
        # From another resource, the same sid is a stranger's.
        self.all_sent()
        self.recv(open_iq("o2", sid="agreed", frm=OTHER))
        reply = self.sent()
        assert reply["error"]["condition"] == "not-acceptable"

    def test_a_second_open_of_the_same_sid_is_refused(self) -> None:
        self.accepted()
        self.recv(open_iq("again"))
        self.assert_reply("again", "error", "not-acceptable")

    def test_block_sizes_are_checked(self) -> None:
        self.ibb.config["max_block_size"] = 4096
        for iq_id, block, condition in (
            ("big", "8192", "resource-constraint"),
            ("zero", "0", "bad-request"),
            ("word", "many", "bad-request"),
        ):
            self.recv(open_iq(iq_id, block=block))
            self.assert_reply(iq_id, "error", condition)
        assert self.authorized == []


class TestReceiving(IBBCase):
    def test_data_in_order_is_acknowledged_and_read(self) -> None:
        stream = self.accepted()
        self.recv(data_iq("d0", 0, b"hello "))
        self.assert_reply("d0", "result")
        self.recv(data_iq("d1", 1, b"world"))
        self.assert_reply("d1", "result")
        assert self.run_coro(stream.read()) == b"hello world"

    def test_an_out_of_order_seq_fails_the_stream(self) -> None:
        stream = self.accepted()
        self.recv(data_iq("d0", 0, b"ok"))
        self.assert_reply("d0", "result")
        self.recv(data_iq("d2", 2, b"skipped one"))
        self.assert_reply("d2", "error", "unexpected-request")
        # What came before is still read; then the break.
        assert self.run_coro(stream.read()) == b"ok"
        with pytest.raises(TransportError):
            self.run_coro(stream.read())
        # The stream is gone: later packets are for no stream.
        self.recv(data_iq("d3", 3, b"more"))
        self.assert_reply("d3", "error", "item-not-found")

    def test_bad_base64_is_bad_request(self) -> None:
        self.accepted()
        self.recv(
            f'<iq type="set" id="b" from="{PEER}" to="{ME}">'
            f'<data xmlns="{NS}" sid="s1" seq="0">!!notbase64</data></iq>'
        )
        self.assert_reply("b", "error", "bad-request")

    def test_a_block_above_the_block_size_is_not_acceptable(self) -> None:
        self.recv(open_iq("o", block="4"))
        self.all_sent()
        self.recv(data_iq("big", 0, b"12345"))
        self.assert_reply("big", "error", "not-acceptable")

    def test_data_for_an_unknown_stream_is_item_not_found(self) -> None:
        self.recv(data_iq("d0", 0, b"x", sid="nope"))
        self.assert_reply("d0", "error", "item-not-found")

    def test_data_from_another_resource_does_not_reach_the_stream(self) -> None:
        self.accepted()
        self.recv(data_iq("d0", 0, b"x").replace(PEER, OTHER))
        reply = self.sent()
        assert reply["error"]["condition"] == "item-not-found"

    def test_a_close_ends_the_stream_after_its_data(self) -> None:
        stream = self.accepted()
        self.recv(data_iq("d0", 0, b"last"))
        self.assert_reply("d0", "result")
        self.recv(close_iq("c"))
        self.assert_reply("c", "result")
        assert self.run_coro(stream.read()) == b"last"
        assert self.run_coro(stream.read()) == b""

    def test_a_close_of_an_unknown_stream_is_item_not_found(self) -> None:
        self.recv(close_iq("c", sid="nope"))
        self.assert_reply("c", "error", "item-not-found")

    def test_a_full_buffer_holds_acknowledgements_until_read(self) -> None:
        block = 60000
        self.recv(open_iq("o", block=str(block)))
        self.all_sent()
        stream = self.run_coro(self.ibb.accept(timeout=1))
        acked = []
        for seq in range(6):
            self.recv(data_iq(f"d{seq}", seq, bytes([seq]) * block))
            acked += [s["id"] for s in self.all_sent()]
        # 256 KiB is the buffer: the fifth packet onwards waits.
        assert acked == ["d0", "d1", "d2", "d3"]
        assert len(self.run_coro(stream.read(4 * block))) == 4 * block
        assert [s["id"] for s in self.all_sent()] == ["d4", "d5"]

    def test_the_peer_going_offline_fails_its_streams(self) -> None:
        stream = self.accepted()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')
        with pytest.raises(ConnectionFailed):
            self.run_coro(stream.read())


class TestSending(IBBCase):
    def open_request(self, **kwargs: Any) -> tuple[Any, Any]:
        """Start opening ``out``; the task and its open IQ (the directed
        presence that goes with it is checked and dropped)."""
        task = self.start(self.ibb.open(PEER, sid="out", **kwargs))
        sent = self.all_sent()
        presences = [s for s in sent if s.name == "presence"]
        assert [p["to"].full for p in presences] == [PEER]
        [request] = [s for s in sent if s.name == "iq"]
        return task, request

    def opened(self, **kwargs: Any) -> ibb_plugin.IBBStream:
        task, request = self.open_request(block_size=4, **kwargs)
        opening = request.xml.find(f"{{{NS}}}open")
        assert opening is not None
        assert opening.attrib == {
            "block-size": "4",
            "sid": "out",
            "stanza": "message" if kwargs.get("use_messages") else "iq",
        }
        self.recv(result(request["id"]))
        return self.run_coro(task)

    def packets(self) -> list[tuple[str, int, bytes]]:
        out = []
        for stanza in self.all_sent():
            data = stanza.xml.find(f"{{{NS}}}data")
            assert data is not None
            assert data.get("sid") == "out"
            out.append(
                (stanza["id"], int(data.get("seq")), base64.b64decode(data.text))
            )
        return out

    def test_an_answer_from_anyone_but_the_peer_is_ignored(self) -> None:
        task, request = self.open_request()
        self.recv(result(request["id"], frm=OTHER))
        assert not task.done()
        self.recv(result(request["id"]))
        assert self.run_coro(task).sid == "out"

    def test_a_refused_open_is_a_transport_error(self) -> None:
        task, request = self.open_request()
        self.recv(
            f'<iq type="error" id="{request["id"]}" from="{PEER}" to="{ME}">'
            '<error type="cancel"><not-acceptable '
            'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
        )
        with pytest.raises(TransportError, match="not-acceptable"):
            self.run_coro(task)

    def test_writes_start_with_one_packet_and_grow_to_the_window(self) -> None:
        stream = self.opened()
        task = self.start(stream.write(b"abcdefghijklmnopqrst"))
        # Nothing acknowledged yet: one packet (the pacer's floor).
        first = self.packets()
        assert [(seq, data) for _, seq, data in first] == [(0, b"abcd")]
        self.recv(result(first[0][0]))
        # 4 bytes acknowledged within the horizon: one packet again.
        second = self.packets()
        assert [(seq, data) for _, seq, data in second] == [(1, b"efgh")]
        self.recv(result(second[0][0]))
        # 8 acknowledged: two packets, the whole window (2 of 4 bytes).
        third = self.packets()
        assert [(seq, data) for _, seq, data in third] == [(2, b"ijkl"), (3, b"mnop")]
        assert not task.done()
        self.recv(result(third[0][0]))
        # Never more than the window, however much was acknowledged.
        assert [seq for _, seq, _ in self.packets()] == [4]
        self.run_coro(task)
        assert stream._sender.in_flight == 2

    def test_a_refused_packet_fails_the_stream(self) -> None:
        stream = self.opened()
        self.run_coro(stream.write(b"abcd"))
        [(iq_id, _, _)] = self.packets()
        self.recv(
            f'<iq type="error" id="{iq_id}" from="{PEER}" to="{ME}">'
            '<error type="cancel"><not-acceptable '
            'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
        )
        with pytest.raises(TransportError, match="refused data"):
            self.run_coro(stream.drain())

    def test_close_waits_for_acknowledgements_then_closes(self) -> None:
        stream = self.opened()
        self.run_coro(stream.write(b"abcd"))
        [(iq_id, _, _)] = self.packets()
        closing = self.start(stream.close(timeout=5))
        self.nothing_sent()  # not before the data is acknowledged
        self.recv(result(iq_id))
        request = self.sent()
        assert request.xml.find(f"{{{NS}}}close").get("sid") == "out"
        assert not closing.done()
        self.recv(result(request["id"]))
        self.run_coro(closing)
        with pytest.raises(Exception, match="closed"):
            self.run_coro(stream.write(b"more"))

    def test_the_peer_closing_stops_our_writes(self) -> None:
        stream = self.opened()
        self.recv(close_iq("c", sid="out"))
        self.assert_reply("c", "result")
        with pytest.raises(ConnectionFailed):
            self.run_coro(stream.write(b"abcd"))

    def test_message_mode_sends_messages(self) -> None:
        stream = self.opened(use_messages=True)
        self.run_coro(stream.write(b"abcdefgh"))
        sent = self.all_sent()
        assert [s.name for s in sent] == ["message", "message"]
        seqs = [s.xml.find(f"{{{NS}}}data").get("seq") for s in sent]
        assert seqs == ["0", "1"]

    def test_a_closed_connection_refuses_writes(self) -> None:
        stream = self.opened()
        self.xmpp.transport.closing = True
        with pytest.raises(ConnectionFailed):
            self.run_coro(stream.write(b"abcd"))

    def test_our_disconnection_fails_every_stream(self) -> None:
        stream = self.opened()
        self.xmpp.event("disconnected")
        self.wait_()
        with pytest.raises(ConnectionFailed):
            self.run_coro(stream.read())
