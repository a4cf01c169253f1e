"""The ``xfer_socks5`` plugin (XEP-0065) through stanzas, with real SOCKS5
connections on 127.0.0.1: the target's answer to an offer, the requester's
offer of its own streamhost and of the server's proxy, proxy discovery and
activation, and what a forged or broken answer gets."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError

import xfer.xmpp.socks5 as socks5_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase, iq_error, result
from xfer.aio.socks5 import connect_streamhost
from xfer.errors import (
    ConnectionFailed,
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
)
from xfer.framing.socks5 import dst_addr

NS = socks5_plugin.NS
DISCO_ITEMS = socks5_plugin.NS_DISCO_ITEMS
DISCO_INFO = socks5_plugin.NS_DISCO_INFO
PROXY = "proxy.localhost"
#: The server's domain: the bound JID's.
DOMAIN = "localhost"


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offer_iq(iq_id: str, hosts: str, *, sid: str = "s1", kind: str = "set") -> str:
    """The peer's XEP-0065 offer: ``<query sid>`` with ``hosts`` (XML)."""
    sid_attr = f' sid="{sid}"' if sid else ""
    return (
        f'<iq type="{kind}" id="{iq_id}" from="{PEER}" to="{ME}">'
        f'<query xmlns="{NS}"{sid_attr} mode="tcp">{hosts}</query></iq>'
    )


def host(jid: str, port: int | str, name: str = "127.0.0.1") -> str:
    return f'<streamhost jid="{jid}" host="{name}" port="{port}"/>'


def used(jid: str, sid: str = "s1") -> str:
    return f'<query xmlns="{NS}" sid="{sid}"><streamhost-used jid="{jid}"/></query>'


class Socks5Case(StanzaCase):
    def setUp(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.allow = True
        self.plugins = (
            (
                "xfer_socks5",
                socks5_plugin,
                {
                    "authorize": self.authorize,
                    "connect_timeout": 5.0,
                    "idle_timeout": 5.0,
                },
            ),
        )
        super().setUp()
        self.socks5 = self.plugin("xfer_socks5")
        # Our streamhost (and any stream) goes with the connection.
        self.closing(lambda: self.socks5._on_disconnected(None))

    def authorize(self, peer: str, sid: str) -> bool:
        self.asked.append((peer, sid))
        return self.allow

    def reply_to(self, iq_id: str, kind: str) -> Any:
        reply = self.sent()
        assert (reply.name, reply["id"], reply["type"]) == ("iq", iq_id, kind)
        assert reply["to"].full == PEER
        return reply

    def error_to(self, iq_id: str, condition: str) -> None:
        reply = self.reply_to(iq_id, "error")
        assert reply["error"]["condition"] == condition
        assert reply["error"]["type"] == "cancel"

    def exchange(
        self, stream: socks5_plugin.Socks5Stream, other: Any, data: bytes
    ) -> None:
        """``data`` goes from ``stream`` to the connection ``other``, and back."""
        self.run_coro(stream.write(data))
        got = bytearray()
        while len(got) < len(data):
            got += self.run_coro(asyncio.wait_for(other.read(), 5))
        assert bytes(got) == data
        self.run_coro(other.write(data[::-1]))
        back = bytearray()
        while len(back) < len(data):
            back += self.run_coro(stream.read())
        assert bytes(back) == data[::-1]


class TestTarget(Socks5Case):
    """A peer offers us streamhosts: we connect to one, name it, queue it."""

    def target_address(self, sid: str = "s1") -> bytes:
        return dst_addr(sid, PEER, ME)

    def test_we_connect_to_the_offered_streamhost_and_name_it(self) -> None:
        port, waiter, _ = self.streamhost(self.target_address())
        self.recv(offer_iq("o1", host(PEER, port)))
        self.until_sent()
        reply = self.reply_to("o1", "result")
        query = reply.xml.find(f"{{{NS}}}query")
        assert query is not None
        assert query.get("sid") == "s1"
        streamhost_used = query.find(f"{{{NS}}}streamhost-used")
        assert streamhost_used is not None
        assert streamhost_used.get("jid") == PEER
        assert self.asked == [(PEER, "s1")]
        stream = self.keep(self.run_coro(self.socks5.accept(timeout=1)))
        assert (stream.peer, stream.sid, stream.streamhost) == (PEER, "s1", PEER)
        assert waiter.done()
        self.exchange(stream, waiter.result(), b"through the streamhost" * 100)
        self.run_coro(stream.close())

    def test_unreachable_and_broken_streamhosts_are_skipped(self) -> None:
        port, waiter, _ = self.streamhost(self.target_address())
        hosts = (
            host("dead@example.org", closed_port())
            + host("bad@example.org", "not-a-port")
            + host("zero@example.org", 0)
            + host("good@example.org", port)
        )
        self.recv(offer_iq("o1", hosts))
        self.until_sent()
        reply = self.reply_to("o1", "result")
        found = reply.xml.find(f"{{{NS}}}query/{{{NS}}}streamhost-used")
        assert found is not None
        assert found.get("jid") == "good@example.org"
        stream = self.keep(self.run_coro(self.socks5.accept(timeout=1)))
        assert stream.streamhost == "good@example.org"
        assert waiter.done()

    def test_a_streamhost_that_refuses_our_address_is_not_used(self) -> None:
        # The streamhost waits for another stream: the handshake is refused,
        # and no other streamhost is left.
        port, waiter, _ = self.streamhost(self.target_address("other"))
        self.recv(offer_iq("o1", host(PEER, port)))
        self.until_sent()
        self.error_to("o1", "item-not-found")
        assert not waiter.done()
        with pytest.raises(TimeoutError):
            self.run_coro(self.socks5.accept(timeout=0.01))

    def test_no_streamhost_at_all_is_item_not_found(self) -> None:
        self.recv(offer_iq("o1", ""))
        self.error_to("o1", "item-not-found")

    def test_an_offer_without_sid_is_a_bad_request(self) -> None:
        self.recv(offer_iq("o1", host(PEER, 1080), sid=""))
        self.error_to("o1", "bad-request")
        assert self.asked == []

    def test_an_unauthorized_offer_is_not_acceptable(self) -> None:
        self.allow = False
        port, waiter, _ = self.streamhost(self.target_address())
        self.recv(offer_iq("o1", host(PEER, port)))
        self.error_to("o1", "not-acceptable")
        assert self.asked == [(PEER, "s1")]
        assert not waiter.done()  # we never connected

    def test_without_authorize_every_offer_is_refused(self) -> None:
        self.socks5.config["authorize"] = None
        self.recv(offer_iq("o1", host(PEER, 1080)))
        self.error_to("o1", "not-acceptable")

    def test_a_get_is_not_an_offer(self) -> None:
        self.recv(offer_iq("g1", host(PEER, 1080), kind="get"))
        self.nothing_sent()
        assert self.asked == []


class TestRequester(Socks5Case):
    """We offer our own streamhost (and the server's proxies) to the peer."""

    def offered(self) -> tuple[Any, list[tuple[str, str, int]]]:
        request = self.sent()
        assert (request.name, request["type"], request["to"].full) == (
            "iq",
            "set",
            PEER,
        )
        query = request.xml.find(f"{{{NS}}}query")
        assert query is not None
        assert (query.get("sid"), query.get("mode")) == ("s1", "tcp")
        hosts = [
            (h.get("jid", ""), h.get("host", ""), int(h.get("port", "0")))
            for h in query.iter(f"{{{NS}}}streamhost")
        ]
        return request, hosts

    def open_direct(self, **kwargs: Any) -> tuple[asyncio.Task[Any], str, int]:
        task = self.start(self.socks5.open(PEER, sid="s1", proxy=False, **kwargs))
        request, hosts = self.offered()
        [(jid, name, port)] = hosts
        assert (jid, name) == (ME, "127.0.0.1")
        return task, request["id"], port

    def connect(self, port: int, address: bytes) -> Any:
        connection = connect_streamhost("127.0.0.1", port, address, 5)
        return self.keep(self.run_coro(connection))

    def test_the_peer_connects_to_our_streamhost_and_we_get_the_stream(self) -> None:
        task, iq_id, port = self.open_direct()
        theirs = self.connect(port, dst_addr("s1", ME, PEER))
        self.recv(result(iq_id, used(ME)))
        stream = self.keep(self.run_coro(task))
        assert (stream.peer, stream.sid, stream.streamhost) == (PEER, "s1", ME)
        self.exchange(stream, theirs, b"direct" * 1000)

    def test_a_connection_for_another_address_is_refused(self) -> None:
        task, iq_id, port = self.open_direct()
        with pytest.raises(RemoteProtocolError, match="refused"):
            self.run_coro(
                connect_streamhost("127.0.0.1", port, dst_addr("s1", PEER, ME), 5)
            )
        self.recv(iq_error(iq_id, "item-not-found"))
        with pytest.raises(NoUsableTransport, match="item-not-found"):
            self.run_coro(task)

    def test_claiming_our_streamhost_without_connecting_is_a_transport_error(
        self,
    ) -> None:
        task, iq_id, _ = self.open_direct()
        self.recv(result(iq_id, used(ME)))
        with pytest.raises(TransportError, match="never connected"):
            self.run_coro(task)

    def test_a_streamhost_we_never_offered_is_a_protocol_error(self) -> None:
        task, iq_id, port = self.open_direct()
        theirs = self.connect(port, dst_addr("s1", ME, PEER))
        self.recv(result(iq_id, used("evil@example.org/x")))
        with pytest.raises(RemoteProtocolError, match="did not offer"):
            self.run_coro(task)
        # The connection that reached our streamhost is dropped, not kept.
        assert self.run_coro(asyncio.wait_for(theirs.read(), 5)) == b""

    def test_an_answer_without_streamhost_used_is_a_protocol_error(self) -> None:
        task, iq_id, _ = self.open_direct()
        self.recv(result(iq_id))
        with pytest.raises(RemoteProtocolError):
            self.run_coro(task)

    def test_a_connection_after_the_answer_is_refused(self) -> None:
        task, iq_id, port = self.open_direct()
        self.recv(iq_error(iq_id, "not-acceptable"))
        with pytest.raises(NoUsableTransport, match="not-acceptable"):
            self.run_coro(task)
        with pytest.raises(RemoteProtocolError, match="refused"):
            self.run_coro(
                connect_streamhost("127.0.0.1", port, dst_addr("s1", ME, PEER), 5)
            )

    def test_giving_up_drops_a_connection_that_already_came(self) -> None:
        task, _, port = self.open_direct()
        theirs = self.connect(port, dst_addr("s1", ME, PEER))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            self.run_coro(task)
        assert self.run_coro(asyncio.wait_for(theirs.read(), 5)) == b""

    def test_no_answer_is_a_timeout(self) -> None:
        task, _, _ = self.open_direct(timeout=0.05)
        with pytest.raises(TransferTimeout):
            self.run_coro(task)

    def test_nothing_to_offer_is_no_usable_transport(self) -> None:
        with pytest.raises(NoUsableTransport):
            self.run_coro(self.socks5.open(PEER, direct=False, proxy=False))
        self.nothing_sent()

    def test_going_offline_fails_the_waiters_and_aborts_the_streams(self) -> None:
        task, iq_id, port = self.open_direct()
        theirs = self.connect(port, dst_addr("s1", ME, PEER))
        self.recv(result(iq_id, used(ME)))
        stream = self.keep(self.run_coro(task))
        waiter = self.run_coro(self.expect(dst_addr("s2", ME, PEER)))
        self.socks5._on_disconnected(None)
        assert isinstance(waiter.exception(), ConnectionFailed)
        with pytest.raises(ConnectionFailed):
            self.run_coro(stream.write(b"x"))
        with pytest.raises(ConnectionResetError):  # not an orderly end
            self.read_to_end(theirs)
        # Listening again afterwards works (a new connection to the server).
        self.run_coro(self.socks5.listen())

    def read_to_end(self, connection: Any) -> None:
        while self.run_coro(asyncio.wait_for(connection.read(), 5)):
            pass

    async def expect(self, address: bytes) -> asyncio.Future[Any]:
        await self.socks5.listen()
        return self.socks5.expect(address)


class DiscoveryCase(Socks5Case):
    def answer_discovery(self, streamhosts: str, *, identity: bool = True) -> None:
        """Answer the disco#items, disco#info and bytestreams queries."""
        items = self.sent()
        assert (items["type"], items["to"].full) == ("get", DOMAIN)
        assert items.xml.find(f"{{{DISCO_ITEMS}}}query") is not None
        self.recv(
            result(
                items["id"],
                f'<query xmlns="{DISCO_ITEMS}"><item jid="{PROXY}"/>'
                '<item jid="pubsub.localhost"/></query>',
                frm=DOMAIN,
            )
        )
        info = self.sent()
        assert (info["type"], info["to"].full) == ("get", PROXY)
        kind = "bytestreams" if identity else "text"
        self.recv(
            result(
                info["id"],
                f'<query xmlns="{DISCO_INFO}">'
                f'<identity category="proxy" type="{kind}"/></query>',
                frm=PROXY,
            )
        )
        if identity:
            ask = self.sent()
            assert (ask["type"], ask["to"].full) == ("get", PROXY)
            self.recv(
                result(
                    ask["id"], f'<query xmlns="{NS}">{streamhosts}</query>', frm=PROXY
                )
            )
        other = self.sent()
        assert other["to"].full == "pubsub.localhost"
        self.recv(iq_error(other["id"], "service-unavailable", frm="pubsub.localhost"))


class TestDiscovery(DiscoveryCase):
    def test_the_servers_proxy_is_found_and_remembered(self) -> None:
        task = self.start(self.socks5.discover_proxies())
        self.answer_discovery(
            host(PROXY, 7777, "proxy.example")
            + host(PROXY, "99999")  # not a port: skipped
            + '<streamhost host="10.0.0.1"/>'  # no jid, no port: the item's, 1080
        )
        found = self.run_coro(task)
        assert found == [(PROXY, "proxy.example", 7777), (PROXY, "10.0.0.1", 1080)]
        # Asked once per connection.
        assert self.run_coro(self.socks5.discover_proxies()) == found
        self.nothing_sent()

    def test_a_service_that_is_no_proxy_is_not_asked(self) -> None:
        task = self.start(self.socks5.discover_proxies())
        self.answer_discovery("", identity=False)
        assert self.run_coro(task) == []


class TestDiscoveryOfOtherDomains(DiscoveryCase):
    def test_each_domain_is_asked_once_and_kept_apart(self) -> None:
        theirs = self.start(self.socks5.discover_proxies("example.net"))
        items = self.sent()
        assert (items["type"], items["to"].full) == ("get", "example.net")
        self.recv(
            result(
                items["id"],
                f'<query xmlns="{DISCO_ITEMS}"><item jid="proxy.example.net"/></query>',
                frm="example.net",
            )
        )
        info = self.sent()
        assert info["to"].full == "proxy.example.net"
        self.recv(
            result(
                info["id"],
                f'<query xmlns="{DISCO_INFO}">'
                '<identity category="proxy" type="bytestreams"/></query>',
                frm="proxy.example.net",
            )
        )
        ask = self.sent()
        # Prosody's proxy refuses users of other servers: then nothing.
        self.recv(iq_error(ask["id"], "forbidden", frm="proxy.example.net"))
        assert self.run_coro(theirs) == []
        assert self.run_coro(self.socks5.discover_proxies("example.net")) == []
        self.nothing_sent()
        # Our own domain is another question.
        ours = self.start(self.socks5.discover_proxies())
        self.answer_discovery(host(PROXY, 7777, "proxy.example"))
        assert self.run_coro(ours) == [(PROXY, "proxy.example", 7777)]

    def test_a_domain_that_fails_is_not_asked_again_at_once(self) -> None:
        first = self.start(self.socks5.discover_proxies("example.net"))
        items = self.sent()
        self.recv(iq_error(items["id"], "remote-server-timeout", frm="example.net"))
        with pytest.raises(IqError):
            self.run_coro(first)
        with pytest.raises(IqError):
            self.run_coro(self.socks5.discover_proxies("example.net"))
        self.nothing_sent()


class TestProxied(DiscoveryCase):
    def open_via_proxy(self) -> tuple[asyncio.Task[Any], str, Any]:
        """Offer our streamhost and the proxy (a real one on loopback)."""
        port, at_proxy, _ = self.streamhost(dst_addr("s1", ME, PEER))
        task = self.start(self.socks5.open(PEER, sid="s1", timeout=5))
        self.answer_discovery(host(PROXY, port))
        request = self.sent()
        query = request.xml.find(f"{{{NS}}}query")
        assert query is not None
        jids = [h.get("jid") for h in query.iter(f"{{{NS}}}streamhost")]
        assert jids == [ME, PROXY]  # ours first
        return task, request["id"], at_proxy

    def activation(self) -> Any:
        self.until_sent()
        activate = self.sent()
        assert (activate["type"], activate["to"].full) == ("set", PROXY)
        query = activate.xml.find(f"{{{NS}}}query")
        assert query is not None
        assert query.get("sid") == "s1"
        assert query.findtext(f"{{{NS}}}activate") == PEER
        return activate

    def test_the_peer_chooses_the_proxy_and_we_activate_it(self) -> None:
        task, iq_id, at_proxy = self.open_via_proxy()
        self.recv(result(iq_id, used(PROXY)))
        activate = self.activation()
        assert at_proxy.done()  # we connected before asking to activate
        self.recv(result(activate["id"], frm=PROXY))
        stream = self.keep(self.run_coro(task))
        assert stream.streamhost == PROXY
        self.exchange(stream, at_proxy.result(), b"relayed" * 500)

    def test_a_proxy_that_will_not_activate_is_a_transport_error(self) -> None:
        task, iq_id, at_proxy = self.open_via_proxy()
        self.recv(result(iq_id, used(PROXY)))
        activate = self.activation()
        self.recv(iq_error(activate["id"], "forbidden", frm=PROXY))
        with pytest.raises(TransportError, match="would not activate"):
            self.run_coro(task)
        # Our connection to the proxy is dropped.
        assert self.run_coro(asyncio.wait_for(at_proxy.result().read(), 5)) == b""


class TestBuildingBlocks(Socks5Case):
    """What the Jingle transport (XEP-0260) uses directly."""

    def test_activate_asks_the_proxy(self) -> None:
        task = self.start(self.socks5.activate(PROXY, "s9", PEER))
        request = self.sent()
        query = request.xml.find(f"{{{NS}}}query")
        assert query is not None
        assert (request["to"].full, query.get("sid")) == (PROXY, "s9")
        assert query.findtext(f"{{{NS}}}activate") == PEER
        self.recv(result(request["id"], frm=PROXY))
        assert self.run_coro(task) is None

    def test_a_refused_activation_is_a_transport_error(self) -> None:
        task = self.start(self.socks5.activate(PROXY, "s9", PEER))
        self.recv(iq_error(self.sent()["id"], "item-not-found", frm=PROXY))
        with pytest.raises(TransportError, match="s9"):
            self.run_coro(task)

    def test_expect_and_connect_pair_up_one_connection(self) -> None:
        address = dst_addr("j1", ME, PEER)
        host_, port = self.run_coro(self.socks5.listen())
        waiter = self.run_coro(self.expect_now(address))
        ours = self.keep(self.run_coro(self.socks5.connect(host_, port, address)))
        incoming = self.keep(self.run_coro(asyncio.wait_for(waiter, 5)))
        stream = self.keep(self.socks5.stream(PEER, "j1", incoming, ME))
        self.exchange(stream, ours, b"jingle")
        # The address is used up: a second connection for it is refused.
        with pytest.raises(RemoteProtocolError):
            self.run_coro(self.socks5.connect(host_, port, address))

    async def expect_now(self, address: bytes) -> asyncio.Future[Any]:
        return self.socks5.expect(address)

    def test_after_plugin_end_offers_are_not_ours_to_answer(self) -> None:
        self.socks5.plugin_end()
        self.recv(offer_iq("o1", host(PEER, 1080)))
        # slixmpp's answer to an IQ nobody handles, not ours.
        self.error_to("o1", "feature-not-implemented")
        assert self.asked == []


def test_the_query_element_escapes_its_attributes() -> None:
    query = socks5_plugin._query_element(sid='"><evil/>')
    text = ET.tostring(query, encoding="unicode")
    assert "<evil" not in text
    assert ET.fromstring(text).get("sid") == '"><evil/>'
