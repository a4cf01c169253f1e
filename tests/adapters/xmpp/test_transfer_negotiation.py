"""The transport of a transfer (``negotiation.py``): XEP-0260 SOCKS5 with
real connections on 127.0.0.1, the nomination, the proxy's activation, and
XEP-0261 IBB through transport-replace; driven through ``xfer_transfer``
as the receiver (the responder) of a scripted sender, whose candidates are
real streamhosts of the test.

The forged cases: a candidate-used naming a candidate we never offered, an
activation of the wrong candidate or for a session that does not exist, a
proxy the peer cannot activate, a peer that never reports, candidates that
point at this host's own services (loopback, the unspecified address, a
name that resolves to loopback) or at a service that is not SOCKS5.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from tests.adapters.xmpp.slix import (
    ME,
    PEER,
    TransferCase,
    file_offer,
    initiate,
    seal,
    transport_info,
)
from xfer.aio.socks5 import connect_streamhost
from xfer.errors import (
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
)
from xfer.framing.socks5 import dst_addr
from xfer.jingle import Action, Reason
from xfer.jingle.candidates import Candidate, CandidateType, priority
from xfer.jingle.wire import Content, IBBTransport, Jingle, S5BTransport

if TYPE_CHECKING:
    from xfer.aio.tcp import TcpConnection
    from xfer.transfer.offer import TransferOffer

CONTENT = os.urandom(20_000)
TSID = "t1"
PROXY = "proxy.example.org"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def candidate(
    port: int,
    *,
    cid: str = "pc1",
    jid: str = PEER,
    kind: CandidateType = CandidateType.DIRECT,
) -> Candidate:
    return Candidate(
        cid=cid,
        host="127.0.0.1",
        port=port,
        jid=jid,
        priority=priority(kind, 100),
        type=kind,
    )


def s5b(*candidates: Candidate) -> S5BTransport:
    return S5BTransport(
        sid=TSID,
        dstaddr=dst_addr(TSID, PEER, ME).decode(),
        mode="tcp",
        candidates=candidates,
    )


def info(**fields: Any) -> Jingle:
    return transport_info(S5BTransport(sid=TSID, **fields))


class ResponderCase(TransferCase):
    """We receive; the peer offers SOCKS5 candidates."""

    def setUp(self) -> None:
        super().setUp()
        self.secure()

    def offer_file(self, *candidates: Candidate) -> tuple[TransferOffer, bytes]:
        offer = self.offer = file_offer(CONTENT)
        key = self.offer_inside_otr(offer)
        reply = self.peer_says(initiate(offer, s5b(*candidates)), "init")
        assert reply["type"] == "result"
        incoming = self.run_coro(self.transfer.next_offer(timeout=5))
        self.receipt = self.start(incoming.accept(self.dir))
        return offer, key

    def our_transport(self) -> S5BTransport:
        """Our session-accept (acknowledged): its SOCKS5 transport."""
        iq, accept = self.next_jingle(Action.SESSION_ACCEPT)
        self.ack(iq)
        content = accept.content
        assert content is not None
        transport = content.transport
        assert isinstance(transport, S5BTransport)
        assert transport.sid == TSID
        assert transport.dstaddr == dst_addr(TSID, ME, PEER).decode()
        assert transport.mode is None  # the initiator's to set
        return transport

    def our_report(self) -> S5BTransport:
        """Our transport-info: the peer's candidate we reached, or an error."""
        iq, jingle = self.next_jingle(Action.TRANSPORT_INFO)
        self.ack(iq)
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, S5BTransport)
        return content.transport

    def peer_reports(self, iq_id: str, **fields: Any) -> None:
        assert self.peer_says(info(**fields), iq_id)["type"] == "result"

    def send_data(self, connection: TcpConnection, data: bytes) -> None:
        self.run_coro(connection.write(data))
        connection.close()

    def stored(self) -> None:
        """The receipt ends well: the file is in place, verdict and success."""
        self.peer_digest(self.offer, CONTENT)  # after the data, inside OTR
        iq, _ = self.next_jingle(Action.SESSION_INFO)
        self.ack(iq)
        iq, end = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert end.reason is Reason.SUCCESS
        path = self.run_coro(self.receipt)
        assert path.read_bytes() == CONTENT
        assert [v.stored for v in self.verdicts()] == [True]

    def failed(self, reason: Reason, error: type[BaseException]) -> Any:
        iq, end = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert end.reason is reason, (end.reason, end.reason_text)
        with pytest.raises(error) as caught:
            self.run_coro(self.receipt)
        assert list(self.dir.iterdir()) == []
        return caught.value


class TestDirect(ResponderCase):
    def test_we_reach_the_peers_candidate_and_it_carries_the_file(self) -> None:
        port, at_peer, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        offer, key = self.offer_file(candidate(port))
        ours = self.our_transport()
        # This host's addresses (loopback last: the test allows it), all ours.
        assert {c.jid for c in ours.candidates} == {ME}
        assert {c.type for c in ours.candidates} == {CandidateType.DIRECT}
        assert ours.candidates[-1].host in ("127.0.0.1", "::1")
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == ("pc1", False)
        assert at_peer.done()
        self.peer_reports("r1", candidate_error=True)
        self.send_data(at_peer.result(), seal(offer, key, CONTENT))
        self.stored()

    def test_when_both_reach_a_candidate_the_higher_priority_wins(self) -> None:
        # Ours (local preference 65535) beats the peer's (100): the peer's
        # connection to our streamhost carries the file, ours to it is dropped.
        port, at_peer, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        offer, key = self.offer_file(candidate(port))
        ours = self.our_transport()
        [mine] = [c for c in ours.candidates if c.host == "127.0.0.1"]
        to_us = self.keep(
            self.run_coro(
                connect_streamhost(mine.host, mine.port, dst_addr(TSID, ME, PEER), 5)
            )
        )
        assert self.our_report().candidate_used == "pc1"
        self.peer_reports("r1", candidate_used=mine.cid)
        assert self.run_coro(asyncio.wait_for(at_peer.result().read(), 5)) == b""
        self.send_data(to_us, seal(offer, key, CONTENT))
        self.stored()

    def test_a_candidate_we_never_offered_is_a_protocol_error(self) -> None:
        port, at_peer, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        self.offer_file(candidate(port))
        self.our_transport()
        self.our_report()
        self.peer_reports("r1", candidate_used="not-ours")
        error = self.failed(Reason.GENERAL_ERROR, RemoteProtocolError)
        assert "never offered" in str(error)
        # Our connection to its streamhost is dropped; the refusal goes
        # inside OTR too.
        assert self.run_coro(asyncio.wait_for(at_peer.result().read(), 5)) == b""
        [verdict] = self.verdicts()
        assert not verdict.stored

    def test_other_transport_info_does_not_count_as_the_report(self) -> None:
        self.transfer.config["connect_timeout"] = 0.5
        port, _, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        self.offer_file(candidate(port))
        self.our_transport()
        self.our_report()
        # An activation is no report on our candidates: still waiting, and
        # waiting ends in time.
        self.peer_reports("r1", activated="pc1")
        self.failed(Reason.TIMEOUT, TransferTimeout)

    def test_a_transport_info_for_an_unknown_session_is_refused(self) -> None:
        reply = self.peer_says(
            Jingle(
                action=Action.TRANSPORT_INFO,
                sid="no-such-session",
                contents=(
                    Content(
                        name="file",
                        transport=S5BTransport(sid=TSID, activated="pc1"),
                    ),
                ),
            ),
            "x1",
        )
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "item-not-found"


class TestProxy(ResponderCase):
    """The peer offers the server's proxy: it activates it, we wait for that."""

    def proxied(self) -> tuple[TransferOffer, bytes, Any]:
        port, at_proxy, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        offer, key = self.offer_file(
            candidate(port, jid=PROXY, kind=CandidateType.PROXY)
        )
        self.our_transport()
        assert self.our_report().candidate_used == "pc1"
        self.peer_reports("r1", candidate_error=True)
        return offer, key, at_proxy

    def test_the_stream_starts_once_the_peer_activated_that_candidate(self) -> None:
        offer, key, at_proxy = self.proxied()
        # An activation naming another candidate does not count.
        self.peer_reports("a0", activated="some-other")
        self.peer_reports("a1", activated="pc1")
        self.send_data(at_proxy.result(), seal(offer, key, CONTENT))
        self.stored()

    def test_a_proxy_error_from_the_peer_fails_the_transport(self) -> None:
        self.proxied()
        self.peer_reports("a1", proxy_error=True)
        error = self.failed(Reason.FAILED_TRANSPORT, TransportError)
        assert "proxy" in str(error)


class TestFallback(ResponderCase):
    """No candidate works on either side: IBB through transport-replace."""

    def nothing_reached(self) -> tuple[TransferOffer, bytes]:
        offer, key = self.offer_file(candidate(closed_port()))
        self.our_transport()
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == (None, True)
        self.peer_reports("r1", candidate_error=True)
        return offer, key

    def replace(self, transport: IBBTransport | S5BTransport) -> Any:
        return self.peer_says(
            Jingle(
                action=Action.TRANSPORT_REPLACE,
                sid="j1",
                contents=(Content(name="file", transport=transport),),
            ),
            "rep",
        )

    def test_the_peer_replaces_socks5_with_ibb(self) -> None:
        offer, key = self.nothing_reached()
        assert self.replace(IBBTransport(sid="ibb2", block_size=2048))["type"] == (
            "result"
        )
        iq, accept = self.next_jingle(Action.TRANSPORT_ACCEPT)
        self.ack(iq)
        content = accept.content
        assert content is not None
        assert content.transport == IBBTransport(sid="ibb2", block_size=2048)
        self.ibb_send("ibb2", seal(offer, key, CONTENT), 2048)
        self.stored()

    def test_a_replacement_that_is_not_ibb_is_rejected(self) -> None:
        self.nothing_reached()
        self.replace(S5BTransport(sid="again"))
        iq, _ = self.next_jingle(Action.TRANSPORT_REJECT)
        self.ack(iq)
        self.failed(Reason.CONNECTIVITY_ERROR, NoUsableTransport)

    def test_with_ibb_off_the_replacement_is_rejected(self) -> None:
        self.transfer.config["ibb"] = False
        self.nothing_reached()
        self.replace(IBBTransport(sid="ibb2"))
        iq, _ = self.next_jingle(Action.TRANSPORT_REJECT)
        self.ack(iq)
        self.failed(Reason.CONNECTIVITY_ERROR, NoUsableTransport)


class Recorder:
    """A plain TCP service (not SOCKS5) on 127.0.0.1 that records what each
    connection sends and answers with junk: what a candidate pointing at a
    local service would get from us."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            self.received += await asyncio.wait_for(reader.read(64), 2)
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
            self.received += await asyncio.wait_for(reader.read(64), 1)
        writer.close()

    async def start(self) -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return server, int(server.sockets[0].getsockname()[1])


class TestHostileCandidates(ResponderCase):
    """Candidates a peer (or a server forging them) picks to make us connect
    to this host's own services."""

    settings: ClassVar[dict[str, Any]] = {"loopback": False, "connect_timeout": 0.5}

    def recorder(self) -> tuple[Recorder, int]:
        recorder = Recorder()
        server, port = self.run_coro(recorder.start())
        self.closing(server.close)
        return recorder, port

    def test_loopback_and_unspecified_candidates_are_never_connected_to(
        self,
    ) -> None:
        recorder, port = self.recorder()
        hostile = [
            Candidate(
                cid=f"h{i}",
                host=host,
                port=port,
                jid=PEER,
                priority=priority(CandidateType.DIRECT, 100 - i),
            )
            for i, host in enumerate(
                ["127.0.0.1", "::1", "0.0.0.0", "::ffff:127.0.0.1", "localhost"]
            )
        ]
        self.offer_file(*hostile)
        ours = self.our_transport()
        # Nor do we offer loopback ourselves: the peer is not on this host.
        assert not {c.host for c in ours.candidates} & {"127.0.0.1", "::1"}
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == (None, True)
        assert recorder.connections == 0
        self.peer_reports("r1", candidate_error=True)
        self.failed(Reason.TIMEOUT, TransferTimeout)
        assert recorder.connections == 0


class TestWhatACandidateGets(ResponderCase):
    """A candidate that is no SOCKS5 streamhost gets the SOCKS5 greeting and
    nothing else (no file data, no CONNECT: it never said yes)."""

    settings: ClassVar[dict[str, Any]] = {"connect_timeout": 0.5}

    def test_only_the_socks5_greeting_reaches_a_service_that_is_not_socks5(
        self,
    ) -> None:
        recorder = Recorder()
        server, port = self.run_coro(recorder.start())
        self.closing(server.close)
        self.offer_file(candidate(port))
        self.our_transport()
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == (None, True)
        assert recorder.connections == 1
        assert bytes(recorder.received) == b"\x05\x01\x00"
        self.peer_reports("r1", candidate_error=True)
        self.failed(Reason.TIMEOUT, TransferTimeout)


class TestStaggered(ResponderCase):
    """The peer's candidates are tried staggered: one that hangs does not
    keep us from the next."""

    def test_a_candidate_that_never_answers_does_not_delay_the_next(self) -> None:
        # A listener that never accepts beyond its backlog is a fair stand-in
        # for a dropped SYN: the TCP connect succeeds (backlog), the SOCKS5
        # greeting is never answered.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        self.closing(silent.close)
        port, at_peer, _ = self.streamhost(dst_addr(TSID, PEER, ME))
        self.transfer.config["candidate_timeout"] = 30.0
        started = time.monotonic()
        offer, key = self.offer_file(
            Candidate(
                cid="hangs",
                host="127.0.0.1",
                port=silent.getsockname()[1],
                jid=PEER,
                priority=priority(CandidateType.DIRECT, 200),
            ),
            candidate(port),
        )
        self.our_transport()
        report = self.our_report()
        assert report.candidate_used == "pc1"
        # Well before the hanging one's 30 s timeout.
        assert time.monotonic() - started < 15
        self.peer_reports("r1", candidate_error=True)
        self.send_data(at_peer.result(), seal(offer, key, CONTENT))
        self.stored()


#: Above any priority of ours (direct, local preference 65535, is 126 << 16
#: + 65535): a candidate of the peer's that would beat any of ours.
ABOVE_OURS = 127 << 16


class Gated:
    """A SOCKS5 streamhost on 127.0.0.1 that takes the greeting but answers
    it only once ``gate`` is set: a try of ours that stays pending as long as
    the test wants, then completes."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.served: list[asyncio.StreamWriter] = []

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writers.append(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            self.received += await reader.readexactly(3)
            await self.gate.wait()
            writer.write(b"\x05\x00")
            head = await reader.readexactly(5)
            rest = await reader.readexactly(head[4] + 2)
            self.received += head + rest
            writer.write(b"\x05\x00\x00\x03" + head[4:] + rest)
            await writer.drain()
            self.served.append(writer)

    async def start(self) -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return server, int(server.sockets[0].getsockname()[1])


class TestThePeerReportsFirst(ResponderCase):
    """The peer's candidate-used comes while our tries of its candidates are
    still pending (XEP-0260 section 2.3): those that could no longer be
    nominated stop at once, the others get ``candidate_grace``. Only a
    report the peer's connection to our streamhost bears out counts: a
    forged or early one, one for another transport or one naming a cid we
    never offered cuts nothing short."""

    settings: ClassVar[dict[str, Any]] = {"candidate_timeout": 30.0}

    def gated(self, priority_: int = priority(CandidateType.DIRECT, 100)) -> Gated:
        gated = Gated()
        server, port = self.run_coro(gated.start())
        self.closing(server.close)
        self.closing(lambda: [w.transport.abort() for w in gated.writers])
        gated.port = port  # type: ignore[attr-defined]
        self.candidate = Candidate(
            cid="pc1", host="127.0.0.1", port=port, jid=PEER, priority=priority_
        )
        return gated

    def our_loopback(self) -> Candidate:
        [mine] = [c for c in self.our_transport().candidates if c.host == "127.0.0.1"]
        return mine

    def connect_to_us(self, mine: Candidate) -> TcpConnection:
        """The peer reaches our streamhost, as it does before it reports."""
        return self.keep(
            self.run_coro(
                connect_streamhost(mine.host, mine.port, dst_addr(TSID, ME, PEER), 5)
            )
        )

    def settle(self, seconds: float = 0.3) -> None:
        self.run_coro(asyncio.sleep(seconds))

    def test_a_try_that_could_not_win_stops_once_the_peer_reached_ours(
        self,
    ) -> None:
        # The peer's candidate (local preference 100) is below ours: had we
        # reached it, ours would still be nominated. Not a 30 s wait.
        gated = self.gated()
        offer, key = self.offer_file(self.candidate)
        mine = self.our_loopback()
        to_us = self.connect_to_us(mine)
        self.peer_reports("r1", candidate_used=mine.cid)
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == (None, True)
        assert gated.served == []
        self.send_data(to_us, seal(offer, key, CONTENT))
        self.stored()

    def test_a_try_that_could_win_and_completes_within_the_grace_wins(
        self,
    ) -> None:
        self.transfer.config["candidate_grace"] = 30.0
        gated = self.gated(ABOVE_OURS)
        offer, key = self.offer_file(self.candidate)
        mine = self.our_loopback()
        to_us = self.connect_to_us(mine)
        self.peer_reports("r1", candidate_used=mine.cid)
        self.settle()
        gated.gate.set()
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == ("pc1", False)
        # Theirs has the higher priority: our connection to it carries the
        # file, the peer's to us is dropped.
        [served] = gated.served
        assert self.run_coro(asyncio.wait_for(to_us.read(), 5)) == b""
        served.write(seal(offer, key, CONTENT))
        served.close()
        self.stored()

    def test_a_try_that_could_win_but_hangs_is_given_up_after_the_grace(
        self,
    ) -> None:
        self.transfer.config["candidate_grace"] = 0.2
        self.gated(ABOVE_OURS)
        offer, key = self.offer_file(self.candidate)
        mine = self.our_loopback()
        to_us = self.connect_to_us(mine)
        self.peer_reports("r1", candidate_used=mine.cid)
        report = self.our_report()  # not after the 30 s candidate timeout
        assert (report.candidate_used, report.candidate_error) == (None, True)
        self.send_data(to_us, seal(offer, key, CONTENT))
        self.stored()

    def test_a_report_the_peers_connection_does_not_bear_out_cuts_nothing(
        self,
    ) -> None:
        # A candidate-used for our streamhost with no connection to it (a
        # server forging it, or sending it before the peer could connect):
        # our try of the peer's candidate goes on and is reported.
        gated = self.gated()
        self.offer_file(self.candidate)
        mine = self.our_loopback()
        self.peer_reports("r1", candidate_used=mine.cid)
        self.settle()
        gated.gate.set()
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == ("pc1", False)
        # Ours outranks it, and nobody ever connects to ours: the transfer
        # ends in time, nothing written, and the peer's streamhost got the
        # SOCKS5 handshake only, then the connection was dropped.
        self.failed(Reason.TIMEOUT, TransferTimeout)
        [served] = gated.served
        assert bytes(gated.received[:3]) == b"\x05\x01\x00"
        assert len(gated.received) == 3 + 5 + 40 + 2  # greeting, CONNECT
        assert served.is_closing() or served.transport.get_write_buffer_size() == 0

    def test_a_report_for_another_transport_is_not_the_peers_report(self) -> None:
        gated = self.gated()
        offer, key = self.offer_file(self.candidate)
        mine = self.our_loopback()
        self.connect_to_us(mine)
        forged = transport_info(S5BTransport(sid="other", candidate_used=mine.cid))
        assert self.peer_says(forged, "f1")["type"] == "result"
        self.settle()
        gated.gate.set()
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == ("pc1", False)
        # The real report follows: the peer reached nothing of ours.
        self.peer_reports("r1", candidate_error=True)
        [served] = gated.served
        served.write(seal(offer, key, CONTENT))
        served.close()
        self.stored()

    def test_an_early_report_of_a_cid_we_never_offered_ends_it_at_once(
        self,
    ) -> None:
        gated = self.gated()
        self.offer_file(self.candidate)
        self.our_transport()
        self.peer_reports("r1", candidate_used="not-ours")
        # Not after the 30 s candidate timeout: a protocol error, our pending
        # try dropped (the peer's streamhost saw the greeting only).
        error = self.failed(Reason.GENERAL_ERROR, RemoteProtocolError)
        assert "never offered" in str(error)
        assert bytes(gated.received) == b"\x05\x01\x00"
        assert gated.served == []
