"""The sending side of ``xfer_transfer`` (``sending.py``, and
``negotiation.py`` as the initiator) through stanzas, against a scripted
receiver: its OTR is a real account, its Jingle, IBB and SOCKS5 are the
test's.

The offer names the file by an id; the file is read once, sealed and
hashed in the same pass, and the digest follows the data inside OTR. A file
counts as delivered only on the receiver's verdict inside OTR; a Jingle
``success`` alone, one that comes before the data, or a verdict for another
file is not believed. A transfer that breaks off after the receiver
accepted is offered again for the rest, under a fresh key; the prefix the
receiver kept is read again for the digest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar
from unittest import mock

import pytest

import xfer.aio.pump as pump_module
import xfer.aio.source as source_module
from tests.adapters.xmpp.slix import (
    ME,
    PEER,
    TransferCase,
    iq_error,
    result,
    transport_info,
)
from xfer.aio.socks5 import connect_streamhost
from xfer.envelope import Opener
from xfer.errors import (
    NoUsableTransport,
    PeerOffline,
    RemoteProtocolError,
    StreamCut,
    TransferDeclined,
    TransferRejected,
    TransportError,
    UntrustedPeer,
)
from xfer.framing.socks5 import dst_addr
from xfer.jingle import Action, Reason, Role
from xfer.jingle.candidates import Candidate, CandidateType, priority
from xfer.jingle.files import FileDescription, Range
from xfer.jingle.wire import (
    NS_FILE_TRANSFER,
    Content,
    IBBTransport,
    Jingle,
    S5BTransport,
)
from xfer.transfer.offer import TransferDigest, TransferOffer, TransferVerdict
from xfer.xmpp.socks5 import NS as NS_BYTESTREAMS
from xfer.xmpp.socks5 import NS_DISCO_INFO, NS_DISCO_ITEMS
from xfer.xmpp.transfer import RESTARTED
from xfer.xmpp.transfer.plugin import FEATURES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from slixmpp.xmlstream.stanzabase import StanzaBase

CONTENT = os.urandom(30_000)
SHA = hashlib.sha256(CONTENT).digest()
PROXY = "proxy.localhost"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opened(key: bytes, offer: TransferOffer, sealed: bytes) -> bytes:
    """What the receiver reads out of a sealed stream (verified)."""
    opener = Opener(key, transfer_id=offer.transfer_id)
    return opener.update(sealed) + opener.finalize()


class SendingCase(TransferCase):
    settings: ClassVar[dict[str, Any]] = {"socks5_direct": False}

    def setUp(self) -> None:
        super().setUp()
        self.secure()
        self.source = self.dir / "report.pdf"
        self.source.write_bytes(CONTENT)
        #: Every read of a file in pieces: (where it started, how many
        #: offers had gone out by then).
        self.reads: list[tuple[int, int]] = []
        self.offers_sent = 0
        for module in (pump_module, source_module):
            patcher = mock.patch.object(module, "read_chunks", self._reading(module))
            patcher.start()
            self.addCleanup(patcher.stop)
        send_offer = self.otr._offers.send_offer

        def counted(*args: Any, **kwargs: Any) -> bytes:
            self.offers_sent += 1
            return send_offer(*args, **kwargs)

        self.otr._offers.send_offer = counted

    def _reading(self, module: Any) -> Any:
        real = module.read_chunks

        def read_chunks(source: Any, **options: Any) -> Any:
            self.reads.append((options.get("start", 0), self.offers_sent))
            return real(source, **options)

        return read_chunks

    def send(self, path: Path | None = None) -> asyncio.Task[Any]:
        return self.start(self.transfer.send_file(PEER, path or self.source))

    def offered(self) -> tuple[StanzaBase, Jingle, TransferOffer, bytes]:
        """Our session-initiate (acknowledged) and the offer inside OTR."""
        iq, jingle = self.next_jingle(Action.SESSION_INITIATE)
        self.ack(iq)
        [(offer, key)] = self.offers_to_peer()[-1:]
        assert (offer.name, offer.size) == ("report.pdf", len(CONTENT))
        content = jingle.content
        assert content is not None
        assert content.encrypted is not None
        assert content.encrypted.transfer_id == offer.transfer_id
        assert content.description is not None
        # What the servers see: an opaque name, the sealed size.
        assert content.description.name == f"{offer.transfer_id.hex()}.xfer"
        assert content.description.size > offer.size
        assert content.description.range == Range()
        assert jingle.initiator == ME
        return iq, jingle, offer, key

    def accept(
        self,
        jingle: Jingle,
        transport: IBBTransport | S5BTransport,
        *,
        offset: int | None = None,
    ) -> None:
        content = jingle.content
        assert content is not None
        assert content.description is not None
        description = FileDescription(
            name=content.description.name,
            size=content.description.size,
            range=None if offset is None else Range(offset=offset),
        )
        answer = Jingle(
            action=Action.SESSION_ACCEPT,
            sid=jingle.sid,
            responder=PEER,
            contents=(
                Content(
                    name="file",
                    creator=Role.INITIATOR,
                    senders="initiator",
                    description=description,
                    application=NS_FILE_TRANSFER,
                    transport=transport,
                    encrypted=content.encrypted,
                ),
            ),
        )
        assert self.peer_says(answer, "acc")["type"] == "result"

    def end(self, jingle: Jingle, reason: Reason, text: str | None = None) -> None:
        """The receiver ends the session (acknowledged by us)."""
        reply = self.peer_says(
            Jingle(
                action=Action.SESSION_TERMINATE,
                sid=jingle.sid,
                reason=reason,
                reason_text=text,
            ),
            f"end-{reason.value}",
        )
        assert reply["type"] == "result"

    def ended(self, reason: Reason) -> Jingle:
        """Our session-terminate (acknowledged by the peer), with ``reason``."""
        iq, end = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert end.reason is reason, (end.reason, end.reason_text)
        return end

    def stored(self, offer: TransferOffer, **changes: Any) -> None:
        fields = {
            "transfer_id": offer.transfer_id,
            "stored": True,
            "sha256": SHA,
            "size": offer.size,
            **changes,
        }
        self.peer_verdict(TransferVerdict(**fields))

    def digest(self, offer: TransferOffer) -> TransferDigest:
        """The sender's digest of ``offer`` that reached us (waiting for it)."""
        found: list[TransferDigest] = []

        def came() -> bool:
            found[:] = [d for d in self.digests() if d.transfer_id == offer.transfer_id]
            return bool(found)

        self.until(came)
        [digest] = found
        return digest

    def over_ibb(self) -> tuple[Jingle, TransferOffer, bytes, bytes]:
        """Offered over IBB, accepted, and the sealed stream taken in."""
        _, jingle, offer, key = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        ibb_sid = content.transport.sid
        self.accept(jingle, IBBTransport(sid=ibb_sid, block_size=1024))
        block, sealed = self.ibb_receive(ibb_sid)
        assert block == 1024  # the smaller of the two
        return jingle, offer, key, sealed


class TestOverIBB(SendingCase):
    def test_a_file_goes_out_and_counts_once_the_verdict_came(self) -> None:
        task = self.send()
        jingle, offer, key, sealed = self.over_ibb()
        assert opened(key, offer, sealed) == CONTENT
        # The offer named the file by its id; the SHA-256 followed the data.
        assert (offer.version, offer.sha256, offer.flags) == (2, None, 0)
        assert offer.file_id is not None
        assert self.digest(offer) == TransferDigest(
            transfer_id=offer.transfer_id, sha256=SHA, size=len(CONTENT)
        )
        assert not task.done()  # not before the receiver's word
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        sent = self.run_coro(task)
        assert (sent.peer, sent.name, sent.size, sent.transport) == (
            PEER,
            "report.pdf",
            len(CONTENT),
            "ibb",
        )
        assert sent.fingerprint == self.their_fingerprint
        assert sent.sealed_size == len(sealed)
        assert (sent.resumed_from, sent.breaks) == (0, 0)
        assert sent.sha256 == SHA
        assert self.plugin("xfer_xep_0166").live == 0
        # One pass over the file, after the offer: the one that sealed it.
        assert self.reads == [(0, 1)]

    def test_nothing_reads_the_whole_file_before_the_offer(self) -> None:
        task = self.send()
        _, jingle, offer, _ = self.offered()
        assert self.reads == []
        assert offer.size == len(CONTENT)
        self.end(jingle, Reason.DECLINE)
        with pytest.raises(TransferDeclined):
            self.run_coro(task)

    def test_a_file_id_is_the_same_for_the_unchanged_file(self) -> None:
        ids = []
        for _ in range(2):
            task = self.send()
            _, jingle, offer, _ = self.offered()
            ids.append(offer.file_id)
            self.end(jingle, Reason.DECLINE)
            with pytest.raises(TransferDeclined):
                self.run_coro(task)
        assert ids[0] == ids[1]
        self.source.write_bytes(CONTENT[:-1] + b"!")
        task = self.send()
        _, jingle, offer, _ = self.offered()
        assert offer.file_id != ids[0]
        self.end(jingle, Reason.DECLINE)
        with pytest.raises(TransferDeclined):
            self.run_coro(task)

    def test_a_jingle_success_without_the_otr_verdict_is_not_believed(self) -> None:
        self.transfer.config["connect_timeout"] = 0.2
        task = self.send()
        jingle, _, _, _ = self.over_ibb()
        self.end(jingle, Reason.SUCCESS)
        with pytest.raises(RemoteProtocolError, match="inside OTR"):
            self.run_coro(task)

    def test_a_verdict_for_another_file_is_a_protocol_error(self) -> None:
        task = self.send()
        jingle, offer, _, _ = self.over_ibb()
        self.stored(offer, sha256=bytes(32))
        self.end(jingle, Reason.SUCCESS)
        with pytest.raises(RemoteProtocolError, match="not the one sent"):
            self.run_coro(task)

    def test_a_refusal_inside_otr_gives_the_receivers_words(self) -> None:
        task = self.send()
        jingle, offer, _, _ = self.over_ibb()
        self.peer_verdict(
            TransferVerdict(
                transfer_id=offer.transfer_id, stored=False, reason="disk full"
            )
        )
        self.end(jingle, Reason.MEDIA_ERROR, "the receiver could not store the file")
        with pytest.raises(TransferRejected) as caught:
            self.run_coro(task)
        assert caught.value.reason == Reason.MEDIA_ERROR.value
        assert caught.value.text == "disk full"

    def test_a_success_verdict_followed_by_refusal_is_rejected(self) -> None:
        task = self.send()
        jingle, offer, _, _ = self.over_ibb()
        self.peer_verdict(
            TransferVerdict(
                transfer_id=offer.transfer_id, stored=False, reason="changed my mind"
            )
        )
        self.end(jingle, Reason.SUCCESS)
        with pytest.raises(TransferRejected, match="changed my mind"):
            self.run_coro(task)

    def test_success_before_the_data_is_a_protocol_error(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.end(jingle, Reason.SUCCESS)
        with pytest.raises(RemoteProtocolError, match="before the file was sent"):
            self.run_coro(task)

    def test_a_decline_is_transfer_declined(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        self.end(jingle, Reason.DECLINE, "no thanks")
        with pytest.raises(TransferDeclined, match="no thanks"):
            self.run_coro(task)

    def test_an_answer_with_another_transport_is_a_protocol_error(self) -> None:
        self.transfer.config["socks5_direct"] = True
        task = self.send()
        _, jingle, _, _ = self.offered()
        self.accept(jingle, S5BTransport(sid="not-the-offered-one"))
        self.ended(Reason.GENERAL_ERROR)
        with pytest.raises(RemoteProtocolError, match="another transport"):
            self.run_coro(task)

    def test_an_ibb_open_the_peer_refuses_fails_the_transport(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        opening = self.take(
            lambda s: (
                s.name == "iq"
                and s.xml.find("{http://jabber.org/protocol/ibb}open") is not None
            )
        )
        self.recv(iq_error(opening["id"], "not-acceptable"))
        self.ended(Reason.FAILED_TRANSPORT)
        with pytest.raises(TransportError, match="not-acceptable"):
            self.run_coro(task)

    def test_a_receiver_that_lost_the_otr_session_gets_the_offer_again(
        self,
    ) -> None:
        task = self.send()
        _, jingle, first, _ = self.offered()
        # The receiver restarted: it could not read the offer and says so.
        self.end(jingle, Reason.SECURITY_ERROR, f"no matching offer; {RESTARTED}")
        before = self.otr.session(PEER).ssid
        self.relay()  # we start a new AKE; the peer answers
        assert self.otr.session(PEER).ssid != before
        jingle, offer, key, sealed = self.over_ibb()
        assert offer.transfer_id != first.transfer_id
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).size == len(CONTENT)

    def test_a_second_restart_is_not_renewed_again(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        self.end(jingle, Reason.SECURITY_ERROR, RESTARTED)
        self.relay()
        _, jingle, _, _ = self.offered()
        self.end(jingle, Reason.SECURITY_ERROR, RESTARTED)
        with pytest.raises(TransferRejected, match="restarted"):
            self.run_coro(task)

    def test_the_receiver_ending_before_the_ibb_open_is_answered(self) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        self.take(
            lambda s: (
                s.name == "iq"
                and s.xml.find("{http://jabber.org/protocol/ibb}open") is not None
            )
        )
        self.end(jingle, Reason.DECLINE, "changed my mind")
        with pytest.raises(TransferDeclined, match="changed my mind"):
            self.run_coro(task)

    def test_a_directory_is_not_sent(self) -> None:
        with pytest.raises(IsADirectoryError):
            self.run_coro(self.transfer.send_file(PEER, self.dir))
        assert self.offers_to_peer() == []

    def test_a_missing_file_is_an_os_error(self) -> None:
        with pytest.raises(FileNotFoundError):
            self.run_coro(self.transfer.send_file(PEER, self.dir / "missing"))


class TestStream(SendingCase):
    """The sender of a stream (spec/otr.md 5.4, spec/jingle.md 3.2)."""

    def send_stream(self, data: bytes = CONTENT) -> asyncio.Task[Any]:
        async def source() -> AsyncIterator[bytes]:
            yield data

        return self.start(self.transfer.send_stream(PEER, source(), name="pipe"))

    def stream_offered(self) -> tuple[StanzaBase, Jingle, TransferOffer]:
        iq, jingle = self.next_jingle(Action.SESSION_INITIATE)
        [(offer, _)] = self.offers_to_peer()[-1:]
        assert offer.is_stream
        assert (offer.name, offer.size, offer.file_id) == ("pipe", 0, bytes(32))
        content = jingle.content
        assert content is not None
        assert content.description is not None
        # What the servers see of a stream: an opaque name, no size, no range.
        assert content.description.name == f"{offer.transfer_id.hex()}.xfer"
        assert (content.description.size, content.description.range) == (None, None)
        return iq, jingle, offer

    def test_a_stream_goes_out_and_counts_once_the_verdict_agrees(self) -> None:
        task = self.send_stream()
        iq, jingle, offer = self.stream_offered()
        self.ack(iq)
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, IBBTransport(sid=content.transport.sid, block_size=1024))
        _, sealed = self.ibb_receive(content.transport.sid)
        digest = self.digest(offer)
        assert (digest.sha256, digest.size) == (SHA, len(CONTENT))
        self.stored(offer, size=len(CONTENT))
        self.end(jingle, Reason.SUCCESS)
        result = self.run_coro(task)
        assert (result.size, result.sha256) == (len(CONTENT), SHA)
        assert len(sealed) == result.sealed_size

    def test_a_verdict_of_another_size_is_a_protocol_error(self) -> None:
        task = self.send_stream()
        iq, jingle, offer = self.stream_offered()
        self.ack(iq)
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, IBBTransport(sid=content.transport.sid, block_size=1024))
        self.ibb_receive(content.transport.sid)
        self.digest(offer)
        self.stored(offer, size=len(CONTENT) - 1)
        self.end(jingle, Reason.SUCCESS)
        with pytest.raises(RemoteProtocolError, match="not the one sent"):
            self.run_coro(task)

    def test_a_receiver_from_before_streams_refuses_at_once(self) -> None:
        task = self.send_stream()
        iq, _, _ = self.stream_offered()
        self.recv(iq_error(iq["id"], "bad-request", etype="modify"))
        self.ended(Reason.GENERAL_ERROR)
        with pytest.raises(RemoteProtocolError, match="predate streams"):
            self.run_coro(task)

    def test_a_range_asked_of_a_stream_is_refused(self) -> None:
        task = self.send_stream()
        iq, jingle, _ = self.stream_offered()
        self.ack(iq)
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        # A range needs a size: the receiver (or its server) gives one.
        accept = dataclasses.replace(
            content.description, size=1000, range=Range(offset=100)
        )
        self.accept(
            dataclasses.replace(
                jingle, contents=(dataclasses.replace(content, description=accept),)
            ),
            IBBTransport(sid=content.transport.sid, block_size=1024),
            offset=100,
        )
        self.ended(Reason.GENERAL_ERROR)
        with pytest.raises(StreamCut, match="range"):
            self.run_coro(task)


class TestResume(SendingCase):
    settings: ClassVar[dict[str, Any]] = {"socks5_direct": False, "resume_attempts": 1}

    def test_a_break_after_the_accept_is_offered_again_for_the_rest(self) -> None:
        self.transfer.online.set()
        task = self.send()
        _, jingle, first, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        # The stream opens, a first block comes, then the receiver's end breaks.
        opening = self.take(
            lambda s: (
                s.name == "iq"
                and s.xml.find("{http://jabber.org/protocol/ibb}open") is not None
            )
        )
        self.ack(opening)
        block = self.take(
            lambda s: (
                s.name == "iq"
                and s.xml.find("{http://jabber.org/protocol/ibb}data") is not None
            )
        )
        self.ack(block)
        self.end(jingle, Reason.CONNECTIVITY_ERROR)
        # The same file again, under a new transfer id and key; the
        # receiver kept 8192 bytes and asks for the rest.
        _, again, second, key = self.offered()
        assert second.transfer_id != first.transfer_id
        assert second.file_id == first.file_id
        content = again.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(again, content.transport, offset=8192)
        _, sealed = self.ibb_receive(content.transport.sid)
        assert opened(key, second, sealed) == CONTENT[8192:]
        # The digest covers the whole file: the kept prefix was read again.
        assert self.digest(second).sha256 == SHA
        self.stored(second)
        self.end(again, Reason.SUCCESS)
        sent = self.run_coro(task)
        assert (sent.resumed_from, sent.breaks, sent.sha256) == (8192, 1, SHA)
        # The first pass (cut off), then the prefix and the rest.
        assert sorted(start for start, _ in self.reads) == [0, 0, 8192]

    def test_a_resume_hashes_the_prefix_as_the_file_is_now(self) -> None:
        self.transfer.online.set()
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        self.end(jingle, Reason.CONNECTIVITY_ERROR)
        # The file changes in the part the receiver kept (same size).
        changed = bytearray(CONTENT)
        changed[100:104] = b"EDIT"
        self.source.write_bytes(changed)
        _, again, second, key = self.offered()
        content = again.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(again, content.transport, offset=8192)
        _, sealed = self.ibb_receive(content.transport.sid)
        assert opened(key, second, sealed) == CONTENT[8192:]
        # Not the hash of what the receiver holds: it will refuse the file.
        assert self.digest(second).sha256 == hashlib.sha256(changed).digest()
        self.peer_verdict(
            TransferVerdict(
                transfer_id=second.transfer_id,
                stored=False,
                reason="integrity check failed",
            )
        )
        self.end(again, Reason.SECURITY_ERROR, "the data did not verify")
        with pytest.raises(TransferRejected, match="integrity"):
            self.run_coro(task)

    def test_a_range_the_sender_cannot_serve_is_refused(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport, offset=len(CONTENT) + 1)
        self.ended(Reason.GENERAL_ERROR)
        with pytest.raises(RemoteProtocolError, match="range"):
            self.run_coro(task)

    def test_a_failure_before_the_accept_is_not_resumed(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        self.end(jingle, Reason.CONNECTIVITY_ERROR)
        with pytest.raises(TransferRejected):
            self.run_coro(task)
        assert len(self.offers_to_peer()) == 1


class TestUntrusted(SendingCase):
    trusted: ClassVar[bool] = False

    def test_an_untrusted_fingerprint_gets_no_offer(self) -> None:
        with pytest.raises(UntrustedPeer):
            self.run_coro(self.transfer.send_file(PEER, self.source))
        assert self.offers_to_peer() == []

    def test_with_accept_untrusted_it_is_sent(self) -> None:
        self.transfer.config["accept_untrusted"] = lambda peer, fp: (
            peer == PEER and fp == self.their_fingerprint
        )
        task = self.send()
        jingle, offer, _, _ = self.over_ibb()
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).size == len(CONTENT)


class InitiatorS5BCase(SendingCase):
    """We offer our own streamhost; the receiver offers its candidates."""

    settings: ClassVar[dict[str, Any]] = {"socks5_direct": True}

    def our_candidates(self, jingle: Jingle) -> S5BTransport:
        content = jingle.content
        assert content is not None
        transport = content.transport
        assert isinstance(transport, S5BTransport)
        assert transport.mode == "tcp"
        assert transport.dstaddr == dst_addr(transport.sid, ME, PEER).decode()
        return transport

    def report(self, jingle: Jingle, **fields: Any) -> None:
        transport = self.our_candidates(jingle)
        reply = self.peer_says(
            transport_info(S5BTransport(sid=transport.sid, **fields), sid=jingle.sid),
            f"r-{len(fields)}-{sorted(fields)}",
        )
        assert reply["type"] == "result"

    def declined(self, task: asyncio.Task[Any], jingle: Jingle) -> None:
        """The receiver declines: the send ends now, not in the test's
        tear-down (where our session-terminate would wait for an answer)."""
        self.end(jingle, Reason.DECLINE)
        with pytest.raises(TransferDeclined):
            self.run_coro(task)

    def our_report(self) -> S5BTransport:
        iq, info = self.next_jingle(Action.TRANSPORT_INFO)
        self.ack(iq)
        content = info.content
        assert content is not None
        assert isinstance(content.transport, S5BTransport)
        return content.transport

    def discovered(
        self, port: int, domain: str = "localhost", proxy: str = PROXY
    ) -> None:
        """Answer the proxy discovery of ``domain``: one proxy on ``port``."""

        def query(to: str, ns: str) -> StanzaBase:
            return self.take(
                lambda s: (
                    s.name == "iq"
                    and s["type"] == "get"
                    and s["to"].full == to
                    and s.xml.find(f"{{{ns}}}query") is not None
                )
            )

        items = query(domain, NS_DISCO_ITEMS)
        self.recv(
            result(
                items["id"],
                f'<query xmlns="{NS_DISCO_ITEMS}"><item jid="{proxy}"/></query>',
                frm=domain,
            )
        )
        info = query(proxy, NS_DISCO_INFO)
        self.recv(
            result(
                info["id"],
                f'<query xmlns="{NS_DISCO_INFO}">'
                '<identity category="proxy" type="bytestreams"/></query>',
                frm=proxy,
            )
        )
        hosts = query(proxy, NS_BYTESTREAMS)
        self.recv(
            result(
                hosts["id"],
                f'<query xmlns="{NS_BYTESTREAMS}"><streamhost jid="{proxy}" '
                f'host="127.0.0.1" port="{port}"/></query>',
                frm=proxy,
            )
        )

    def read_all(self, connection: Any) -> bytes:
        data = bytearray()
        while piece := self.run_coro(asyncio.wait_for(connection.read(), 5)):
            data += piece
        return bytes(data)


class TestInitiatorSocks5(InitiatorS5BCase):
    def test_the_receiver_connects_to_our_streamhost(self) -> None:
        task = self.send()
        _, jingle, offer, key = self.offered()
        ours = self.our_candidates(jingle)
        [mine] = [c for c in ours.candidates if c.host == "127.0.0.1"]
        assert (mine.jid, mine.host, mine.type) == (
            ME,
            "127.0.0.1",
            CandidateType.DIRECT,
        )
        to_us = self.keep(
            self.run_coro(
                connect_streamhost(
                    mine.host, mine.port, dst_addr(ours.sid, ME, PEER), 5
                )
            )
        )
        # The receiver offers no candidate of its own.
        self.accept(jingle, S5BTransport(sid=ours.sid))
        report = self.our_report()
        assert (report.candidate_used, report.candidate_error) == (None, True)
        self.report(jingle, candidate_used=mine.cid)
        sealed = self.read_all(to_us)
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).transport == "socks5-direct"

    def test_we_reach_the_receivers_candidate(self) -> None:
        task = self.send()
        _, jingle, offer, key = self.offered()
        ours = self.our_candidates(jingle)
        port, at_peer, _ = self.streamhost(dst_addr(ours.sid, PEER, ME))
        theirs = Candidate(
            cid="rc1",
            host="127.0.0.1",
            port=port,
            jid=PEER,
            priority=priority(CandidateType.DIRECT, 7),
        )
        self.accept(jingle, S5BTransport(sid=ours.sid, candidates=(theirs,)))
        assert self.our_report().candidate_used == "rc1"
        self.report(jingle, candidate_error=True)
        sealed = self.read_all(at_peer.result())
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).transport == "socks5-direct"

    def test_claiming_our_streamhost_without_connecting_times_out(self) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        task = self.send()
        _, jingle, _, _ = self.offered()
        ours = self.our_candidates(jingle)
        [mine] = [c for c in ours.candidates if c.host == "127.0.0.1"]
        self.accept(jingle, S5BTransport(sid=ours.sid))
        self.our_report()
        self.report(jingle, candidate_used=mine.cid)  # a lie: it never came
        self.ended(Reason.TIMEOUT)
        with pytest.raises(TransportError, match="never connected"):
            self.run_coro(task)

    def test_nothing_reached_falls_back_to_ibb(self) -> None:
        task = self.send()
        _, jingle, offer, key = self.offered()
        ours = self.our_candidates(jingle)
        dead = Candidate(
            cid="rc1",
            host="127.0.0.1",
            port=closed_port(),
            jid=PEER,
            priority=priority(CandidateType.DIRECT),
        )
        self.accept(jingle, S5BTransport(sid=ours.sid, candidates=(dead,)))
        assert self.our_report().candidate_error
        self.report(jingle, candidate_error=True)
        iq, replace = self.next_jingle(Action.TRANSPORT_REPLACE)
        self.ack(iq)
        content = replace.content
        assert content is not None
        ibb = content.transport
        assert isinstance(ibb, IBBTransport)
        self.peer_says(
            Jingle(
                action=Action.TRANSPORT_ACCEPT,
                sid=jingle.sid,
                contents=(Content(name="file", transport=ibb),),
            ),
            "tacc",
        )
        _, sealed = self.ibb_receive(ibb.sid)
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).transport == "ibb"

    def test_a_rejected_replacement_is_no_usable_transport(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        ours = self.our_candidates(jingle)
        self.accept(jingle, S5BTransport(sid=ours.sid))
        self.our_report()
        self.report(jingle, candidate_error=True)
        iq, replace = self.next_jingle(Action.TRANSPORT_REPLACE)
        self.ack(iq)
        self.peer_says(
            Jingle(
                action=Action.TRANSPORT_REJECT,
                sid=jingle.sid,
                contents=replace.contents,
            ),
            "trej",
        )
        self.ended(Reason.CONNECTIVITY_ERROR)
        with pytest.raises(NoUsableTransport):
            self.run_coro(task)

    def test_with_ibb_off_a_failed_socks5_is_no_usable_transport(self) -> None:
        self.transfer.config["ibb"] = False
        task = self.send()
        _, jingle, _, _ = self.offered()
        ours = self.our_candidates(jingle)
        self.accept(jingle, S5BTransport(sid=ours.sid))
        self.our_report()
        self.report(jingle, candidate_error=True)
        self.ended(Reason.CONNECTIVITY_ERROR)
        with pytest.raises(NoUsableTransport, match="IBB is off"):
            self.run_coro(task)


class TestOurProxy(InitiatorS5BCase):
    """The server's proxy is one of our candidates: we activate it."""

    settings: ClassVar[dict[str, Any]] = {"socks5_direct": False, "socks5_proxy": True}

    def proxied(self) -> tuple[asyncio.Task[Any], Jingle, Any, Any]:
        port, _, listener = self.streamhost(b"x" * 40)
        task = self.send()
        self.discovered(port)
        _, jingle, offer, key = self.offered()
        ours = self.our_candidates(jingle)
        [proxy] = ours.candidates
        assert (proxy.jid, proxy.type) == (PROXY, CandidateType.PROXY)
        at_proxy = self.expect_at(listener, dst_addr(ours.sid, ME, PEER))
        self.accept(jingle, S5BTransport(sid=ours.sid))
        self.our_report()
        self.report(jingle, candidate_used=proxy.cid)
        activate = self.take(
            lambda s: s.name == "iq" and s["type"] == "set" and s["to"].full == PROXY
        )
        query = activate.xml.find(f"{{{NS_BYTESTREAMS}}}query")
        assert query is not None
        assert query.get("sid") == ours.sid
        assert query.findtext(f"{{{NS_BYTESTREAMS}}}activate") == PEER
        assert at_proxy.done()  # connected before asking to activate
        return task, jingle, (offer, key, proxy), (activate, at_proxy)

    def test_we_activate_the_proxy_and_send_through_it(self) -> None:
        task, jingle, (offer, key, proxy), (activate, at_proxy) = self.proxied()
        self.recv(result(activate["id"], frm=PROXY))
        iq, activated = self.next_jingle(Action.TRANSPORT_INFO)
        self.ack(iq)
        content = activated.content
        assert content is not None
        assert isinstance(content.transport, S5BTransport)
        assert content.transport.activated == proxy.cid
        sealed = self.read_all(at_proxy.result())
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(task).transport == "socks5-proxy"

    def test_a_proxy_that_will_not_activate_is_reported_to_the_peer(self) -> None:
        task, _, _, (activate, _) = self.proxied()
        self.recv(iq_error(activate["id"], "forbidden", frm=PROXY))
        iq, info = self.next_jingle(Action.TRANSPORT_INFO)
        self.ack(iq)
        content = info.content
        assert content is not None
        assert isinstance(content.transport, S5BTransport)
        assert content.transport.proxy_error
        self.ended(Reason.FAILED_TRANSPORT)
        with pytest.raises(TransportError, match="activate"):
            self.run_coro(task)


class TestPeersServersProxy(InitiatorS5BCase):
    """The peer's server's proxies are offered too, after ours; a peer's
    server that is slow to answer does not hold up the offer."""

    settings: ClassVar[dict[str, Any]] = {
        "socks5_direct": False,
        "socks5_proxy": True,
        "candidate_timeout": 1.0,
    }

    def test_both_servers_proxies_are_offered_ours_first(self) -> None:
        task = self.send()
        self.discovered(1111)
        self.discovered(2222, domain="example.org", proxy="proxy.example.org")
        _, jingle, _, _ = self.offered()
        ours, theirs = self.our_candidates(jingle).candidates
        assert (ours.jid, ours.port, ours.priority) == (
            PROXY,
            1111,
            priority(CandidateType.PROXY, 1),
        )
        assert (theirs.jid, theirs.port, theirs.priority) == (
            "proxy.example.org",
            2222,
            priority(CandidateType.PROXY, 0),
        )
        assert {ours.type, theirs.type} == {CandidateType.PROXY}
        self.declined(task, jingle)

    def test_a_peers_server_that_does_not_answer_is_left_out(self) -> None:
        task = self.send()
        self.discovered(1111)
        # example.org never answers its disco items: after candidate_timeout
        # the offer goes out with our server's proxy alone.
        _, jingle, _, _ = self.offered()
        [ours] = self.our_candidates(jingle).candidates
        assert ours.jid == PROXY
        self.declined(task, jingle)


class TestAddedAddresses(InitiatorS5BCase):
    """--address: offered as assisted candidates (after direct ones), on our
    streamhost's port unless given; --no-local-addresses: nothing else."""

    settings: ClassVar[dict[str, Any]] = {
        "socks5_direct": True,
        "local_addresses": False,
        "addresses": [("198.51.100.7", 4000), ("home.example", None)],
    }

    def test_only_the_added_addresses_are_offered_as_assisted(self) -> None:
        task = self.send()
        _, jingle, _, _ = self.offered()
        forwarded, named = self.our_candidates(jingle).candidates
        _, port = self.run_coro(self.plugin("xfer_socks5").listen())
        assert (forwarded.host, forwarded.port, forwarded.jid) == (
            "198.51.100.7",
            4000,
            ME,
        )
        assert (named.host, named.port) == ("home.example", port)
        assert {forwarded.type, named.type} == {CandidateType.ASSISTED}
        assert forwarded.priority == priority(CandidateType.ASSISTED, 65535)
        assert named.priority == priority(CandidateType.ASSISTED, 65534)
        self.declined(task, jingle)


class TestResumeAttempts(SendingCase):
    settings: ClassVar[dict[str, Any]] = {
        "socks5_direct": False,
        "resume_attempts": 2,
        "resume_backoff": 0.01,
    }

    def test_each_refused_offer_of_the_rest_is_one_attempt(self) -> None:
        """After a break, the receiver's server refuses two offers of the
        rest (its resource is gone): each uses up one of the attempts, and
        the error says how many there were."""
        self.transfer.online.set()
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        self.end(jingle, Reason.CONNECTIVITY_ERROR)
        for attempt in range(2):
            if attempt:
                # The OTR session the refused offer went over is ended (the
                # resource may be gone): the peer is looked for again, and
                # found where it was, and a new key exchange follows.
                query = self.take(
                    lambda s: (
                        s.name == "iq"
                        and s["to"].full == PEER
                        and s.xml.find(f"{{{NS_DISCO_INFO}}}query") is not None
                    )
                )
                features = "".join(f'<feature var="{f}"/>' for f in FEATURES)
                self.recv(
                    result(
                        query["id"],
                        f'<query xmlns="{NS_DISCO_INFO}">{features}</query>',
                    )
                )
                self.relay()
            iq, _ = self.next_jingle(Action.SESSION_INITIATE)
            self.recv(iq_error(iq["id"], "service-unavailable"))
            end, _ = self.next_jingle(Action.SESSION_TERMINATE)
            self.ack(end)
        with pytest.raises(RemoteProtocolError, match="gave up after 2 attempts"):
            self.run_coro(task)
        assert len(self.offers_to_peer()) == 3

    def test_a_bounce_ends_the_wait_for_the_answer_at_once(self) -> None:
        """Our message to the peer comes back as an error while its
        session-initiate waits: the peer is offline, said at once."""
        task = self.send()
        self.next_jingle(Action.SESSION_INITIATE)  # never answered
        self.recv(
            f'<message type="error" from="{PEER}" to="{ME}" id="{self.otr_ids[-1]}">'
            '<error type="cancel">'
            '<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
            "</error></message>"
        )
        end, _ = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(end)
        with pytest.raises(PeerOffline, match="service-unavailable"):
            self.run_coro(asyncio.wait_for(task, 5))
