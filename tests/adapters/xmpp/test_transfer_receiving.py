"""The receiving side of ``xfer_transfer`` (``receiving.py``, ``receipt.py``)
through stanzas, against a scripted sender: its OTR is a real account, its
Jingle, IBB and SOCKS5 are written by the test.

An offer is vetted before the application sees it (one encrypted file, a
matching offer inside OTR, sizes that agree, a trusted fingerprint, the
size limit, the quotas); a refused one is terminated with the reason the
code names. An accepted one is received over IBB or SOCKS5, verified, and
stored once the sender's digest inside OTR (after the data) agrees;
confirmed inside OTR and ended with ``success``. A broken or forged one, or
one whose digest disagrees or never comes, fails with the typed error and
leaves nothing at the destination.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING, Any, ClassVar
from xml.sax.saxutils import escape

import pytest

from tests.adapters.xmpp.slix import (
    ME,
    PEER,
    TransferCase,
    digest_of,
    file_offer,
    initiate,
    seal,
)
from xfer.errors import (
    DestinationExists,
    IntegrityError,
    LocalProtocolError,
    StreamTruncated,
    TransferRejected,
    TransferTimeout,
)
from xfer.jingle import Action, Reason
from xfer.jingle.files import Range
from xfer.jingle.wire import IBBTransport, Jingle
from xfer.otr import Policy
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.transfer.offer import XFER_USE, TransferOffer
from xfer.xmpp.transfer import RESTARTED

if TYPE_CHECKING:
    from pathlib import Path

    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.transfer.offer import TransferOffer
    from xfer.xmpp.transfer import IncomingOffer

CONTENT = os.urandom(40_000) + b"the end"
SHA = hashlib.sha256(CONTENT).digest()
NS_IBB = "http://jabber.org/protocol/ibb"
_IMPOSTOR: list[PrivateKey] = []


def impostor_key() -> PrivateKey:
    """A third OTR key: what a server answering in the peer's name holds."""
    if not _IMPOSTOR:
        _IMPOSTOR.append(PrivateKey.generate())
    return _IMPOSTOR[0]


def terminate(reason: Reason, *, sid: str = "j1", text: str | None = None) -> Jingle:
    return Jingle(
        action=Action.SESSION_TERMINATE, sid=sid, reason=reason, reason_text=text
    )


class ReceivingCase(TransferCase):
    def offered(
        self,
        content: bytes = CONTENT,
        *,
        transport: Any = None,
        sid: str = "j1",
        version: int = 2,
        **changes: Any,
    ) -> tuple[TransferOffer, bytes]:
        """The peer offers ``content``: inside OTR, then as a Jingle session
        (acknowledged by us). Its offer and key."""
        if self.otr.session(PEER) is None:
            self.secure()
        offer = file_offer(content, version=version)
        key = self.offer_inside_otr(offer)
        jingle = initiate(
            offer,
            IBBTransport(sid="ibb1", block_size=4096)
            if transport is None
            else transport,
            sid=sid,
            **changes,
        )
        assert self.peer_says(jingle, f"init-{sid}")["type"] == "result"
        return offer, key

    def incoming(self) -> IncomingOffer:
        return self.run_coro(self.transfer.next_offer(timeout=5))

    def ended(self, reason: Reason) -> Jingle:
        """Our session-terminate, acknowledged by the peer."""
        iq, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert jingle.reason is reason, (jingle.reason, jingle.reason_text)
        return jingle

    def accepted(self) -> tuple[StanzaBase, Jingle]:
        iq, jingle = self.next_jingle(Action.SESSION_ACCEPT)
        assert jingle.responder == ME
        self.ack(iq)
        return iq, jingle

    def finish(self) -> None:
        """The end of a good receipt: session-info received, then success."""
        iq, info = self.next_jingle(Action.SESSION_INFO)
        assert info.info is not None
        self.ack(iq)
        self.ended(Reason.SUCCESS)


class TestReceivingOverIBB(ReceivingCase):
    def test_an_offer_is_vetted_accepted_received_and_confirmed(self) -> None:
        offer, key = self.offered()
        incoming = self.incoming()
        assert (incoming.peer, incoming.name, incoming.size) == (
            PEER,
            offer.name,
            len(CONTENT),
        )
        assert (incoming.file_id, incoming.transfer_id) == (
            offer.file_id,
            offer.transfer_id,
        )
        assert incoming.sha256 is None  # it comes after the data
        assert incoming.trusted
        assert incoming.fingerprint == self.their_fingerprint
        assert not incoming.withdrawn
        # Vetted: now the peer may learn that we are online.
        presence = self.take(lambda s: s.name == "presence")
        assert presence["to"].full == PEER
        task = self.start(incoming.accept(self.dir))
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        assert content.transport.sid == "ibb1"
        assert content.encrypted is not None
        assert content.encrypted.transfer_id == offer.transfer_id
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        # Every chunk verified, but nothing goes into place before the
        # sender's SHA-256 of the file came inside OTR.
        self.wait_(0.2)
        assert not task.done()
        assert not (self.dir / offer.name).exists()
        assert self.verdicts() == []
        self.peer_digest(offer, CONTENT)
        self.finish()
        path = self.run_coro(task)
        assert path == self.dir / offer.name
        assert path.read_bytes() == CONTENT
        assert incoming.sha256 == SHA
        [verdict] = self.verdicts()
        assert verdict.stored
        assert (verdict.sha256, verdict.size) == (SHA, offer.size)
        # The receipt is over and forgotten; the Jingle session too.
        assert self.transfer._receipts == {}
        assert self.plugin("xfer_xep_0166").live == 0
        assert self.otr._offers._digests._waiting == {}

    def test_a_version_1_offer_is_checked_against_its_own_hash(self) -> None:
        offer, key = self.offered(version=1)
        incoming = self.incoming()
        assert incoming.sha256 == offer.sha256 == SHA
        task = self.start(incoming.accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        self.finish()  # no digest is waited for
        assert self.run_coro(task).read_bytes() == CONTENT
        [verdict] = self.verdicts()
        assert (verdict.stored, verdict.sha256) == (True, SHA)

    def test_a_digest_that_disagrees_is_refused_and_nothing_is_kept(self) -> None:
        offer, key = self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        self.peer_digest(offer, CONTENT + b"!")  # not what came
        ended = self.ended(Reason.SECURITY_ERROR)
        assert ended.reason_text == "the data did not verify"
        with pytest.raises(IntegrityError):
            self.run_coro(task)
        [verdict] = self.verdicts()
        assert (verdict.stored, verdict.sha256) == (False, bytes(32))
        assert verdict.reason
        assert list(self.dir.iterdir()) == []

    def test_without_the_digest_the_file_is_refused_after_the_timeout(self) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        offer, key = self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        # (A server that drops the digest only makes the transfer fail.)
        self.ended(Reason.SECURITY_ERROR)
        with pytest.raises(IntegrityError):
            self.run_coro(task)
        [verdict] = self.verdicts()
        assert not verdict.stored
        assert list(self.dir.iterdir()) == []

    def impostor(self) -> Account:
        """An OTR session of another key under the peer's full JID (the
        servers can answer in the peer's name), secured with us."""
        evil = Account(impostor_key(), our_tag=0x3333_3333, policy=Policy())
        self.others.append(evil)
        evil.session(ME).start_ake()
        for _ in range(10):
            self.pump()
            out = evil.data_to_send()
            if not out:
                break
            for _, body in out:
                self.recv(
                    f'<message type="chat" from="{PEER}" to="{ME}">'
                    f"<body>{escape(body)}</body></message>"
                )
        session = evil.best(ME)
        assert session is not None
        assert session.their_fingerprint is not None
        return evil

    def test_a_digest_from_another_key_is_ignored(self) -> None:
        offer, key = self.offered()
        evil = self.impostor()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        # The impostor's digest (of other data) is not the sender's word...
        forged = dataclasses.replace(
            digest_of(offer, CONTENT), sha256=hashlib.sha256(b"forged").digest()
        )
        session = evil.best(ME)
        assert session is not None
        session.extra_symmetric_key(XFER_USE, forged.encode())
        with self.assertLogs("xfer.xmpp.offers", "WARNING") as logs:
            for _, body in evil.data_to_send():
                self.recv(
                    f'<message type="chat" from="{PEER}" to="{ME}">'
                    f"<body>{escape(body)}</body></message>"
                )
            self.wait_(0.1)
        assert "not the peer of the offer" in logs.output[0]
        assert not task.done()
        # ... the sender's is.
        self.peer_digest(offer, CONTENT)
        self.finish()
        assert self.run_coro(task).read_bytes() == CONTENT
        assert [v.stored for v in self.verdicts()] == [True]

    def test_a_digest_for_another_transfer_does_not_count(self) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        offer, key = self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        other = dataclasses.replace(offer, transfer_id=os.urandom(16))
        with self.assertLogs("xfer.xmpp.offers", "INFO") as logs:
            self.peer_digest(other, CONTENT)
        assert "on no transfer of ours" in logs.output[0]
        self.ended(Reason.SECURITY_ERROR)
        with pytest.raises(IntegrityError):
            self.run_coro(task)
        assert list(self.dir.iterdir()) == []

    def test_data_that_does_not_verify_is_refused_and_nothing_is_kept(self) -> None:
        offer, _ = self.offered()
        incoming = self.incoming()
        task = self.start(incoming.accept(self.dir))
        self.accepted()
        forged = seal(offer, os.urandom(32), CONTENT)  # not the OTR key
        self.ibb_send("ibb1", forged, 4096)
        ended = self.ended(Reason.SECURITY_ERROR)
        assert ended.reason_text == "the data did not verify"
        with pytest.raises(IntegrityError):
            self.run_coro(task)
        [verdict] = self.verdicts()
        assert not verdict.stored
        assert verdict.reason
        assert list(self.dir.iterdir()) == []

    def test_ibb_data_for_another_stream_is_refused(self) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        # The peer opens a stream nobody agreed on: refused, and the
        # agreed one never opens.
        self.recv(
            f'<iq type="set" id="o1" from="{PEER}" to="{ME}">'
            '<open xmlns="http://jabber.org/protocol/ibb" sid="other" '
            'block-size="4096" stanza="iq"/></iq>'
        )
        reply = self.answered("o1")
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "not-acceptable"
        # Data for a stream that does not exist is refused too.
        self.recv(
            f'<iq type="set" id="x1" from="{PEER}" to="{ME}">'
            '<data xmlns="http://jabber.org/protocol/ibb" sid="ibb1" seq="0">'
            "AAAA</data></iq>"
        )
        reply = self.answered("x1")
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "item-not-found"
        self.ended(Reason.TIMEOUT)
        with pytest.raises(TransferTimeout):
            self.run_coro(task)
        assert list(self.dir.iterdir()) == []

    def test_the_sender_cancelling_during_the_data_fails_the_receipt(self) -> None:
        offer, key = self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        sealed = seal(offer, key, CONTENT)
        self.ibb_send("ibb1", sealed[:4096], 4096, closing=False)
        answer = self.peer_says(terminate(Reason.CANCEL, text="changed my mind"), "t1")
        assert answer["type"] == "result"
        with pytest.raises(TransferRejected) as caught:
            self.run_coro(task)
        assert caught.value.reason == Reason.CANCEL.value
        assert caught.value.text == "changed my mind"
        # Cancelled is not a break: nothing waits for the rest.
        assert self.transfer._receipts == {}

    def test_the_sender_cancelling_before_the_ibb_stream_ends_the_receipt(
        self,
    ) -> None:
        self.transfer.config["connect_timeout"] = 0.3
        self.offered()
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.peer_says(terminate(Reason.CANCEL, text="changed my mind"), "t1")
        with pytest.raises(TransferRejected) as caught:
            self.run_coro(task)
        assert caught.value.reason == Reason.CANCEL.value

    def test_decline_ends_the_session(self) -> None:
        self.offered()
        incoming = self.incoming()
        self.start(incoming.decline("not now"))
        jingle = self.ended(Reason.DECLINE)
        assert jingle.reason_text == "not now"
        # An offer is answered once.
        with pytest.raises(LocalProtocolError):
            self.run_coro(incoming.accept(self.dir))

    def test_a_taken_destination_is_refused_without_overwrite(self) -> None:
        self.offered()
        target = self.dir / "taken.bin"
        target.write_bytes(b"mine")
        incoming = self.incoming()
        task = self.start(incoming.accept(target))
        self.ended(Reason.DECLINE)
        with pytest.raises(DestinationExists):
            self.run_coro(task)
        assert target.read_bytes() == b"mine"

    def test_an_offer_withdrawn_before_the_answer_is_skipped(self) -> None:
        self.offered(sid="j1")
        self.until(lambda: self.transfer._offers.qsize() == 1)
        self.peer_says(terminate(Reason.CANCEL), "t1")
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_offer(timeout=0.05))


class TestVetting(ReceivingCase):
    """Offers that never reach the application: terminated with a reason."""

    def refused(self, reason: Reason) -> Jingle:
        jingle = self.ended(reason)
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_offer(timeout=0.01))
        return jingle

    def test_an_offer_without_encryption_is_a_security_error(self) -> None:
        self.offered(encrypted=False)
        jingle = self.refused(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "xfer accepts only end-to-end encrypted files"

    def test_an_offer_without_transport_is_unsupported(self) -> None:
        self.secure()
        offer = file_offer(CONTENT)
        self.offer_inside_otr(offer)
        self.peer_says(initiate(offer, None), "i1")
        self.refused(Reason.UNSUPPORTED_TRANSPORTS)

    def test_two_files_in_one_session_are_unsupported(self) -> None:
        self.secure()
        offer = file_offer(CONTENT)
        self.offer_inside_otr(offer)
        first = initiate(offer, IBBTransport(sid="a")).contents[0]
        second = type(first)(
            name="second",
            description=first.description,
            application=first.application,
            transport=IBBTransport(sid="b"),
            encrypted=first.encrypted,
        )
        jingle = initiate(offer, IBBTransport(sid="a"))
        jingle = Jingle(
            action=jingle.action,
            sid=jingle.sid,
            initiator=jingle.initiator,
            contents=(first, second),
        )
        self.peer_says(jingle, "i1")
        self.refused(Reason.UNSUPPORTED_APPLICATIONS)

    def test_an_offer_with_no_match_inside_otr_is_a_security_error(self) -> None:
        self.transfer.config["otr_offer_wait"] = 0.05
        self.secure()
        offer = file_offer(CONTENT)  # never sent inside OTR
        self.peer_says(initiate(offer, IBBTransport(sid="a")), "i1")
        jingle = self.refused(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "no matching offer inside OTR"

    def test_an_otr_offer_with_unusable_parameters_is_a_security_error(self) -> None:
        self.secure()
        offer = dataclasses.replace(file_offer(CONTENT), suite=99)
        self.offer_inside_otr(offer)
        self.peer_says(initiate(offer, IBBTransport(sid="a"), size=1000), "i1")
        jingle = self.refused(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "the OTR offer names unusable parameters"

    def test_an_offer_we_could_not_read_asks_for_it_again(self) -> None:
        # We lost our OTR session (the server said the peer went offline);
        # the peer kept its own and offers under it: we cannot read that
        # offer, and say so, so that the sender renews and offers again.
        self.secure()
        self.recv(f'<presence type="unavailable" from="{PEER}" to="{ME}"/>')
        assert self.otr.session(PEER) is None
        offer = file_offer(CONTENT)
        self.offer_inside_otr(offer)
        assert self.otr.lost_offers(PEER)
        self.peer_says(initiate(offer, IBBTransport(sid="a")), "i1")
        jingle = self.refused(Reason.SECURITY_ERROR)
        assert jingle.reason_text == f"no matching offer inside OTR; {RESTARTED}"

    def test_a_jingle_size_unlike_the_otr_offer_is_a_security_error(self) -> None:
        self.offered(size=1)
        jingle = self.refused(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "the Jingle size does not match the OTR offer"

    def test_a_file_over_the_limit_is_a_media_error(self) -> None:
        self.transfer.config["max_size"] = len(CONTENT) - 1
        self.offered()
        jingle = self.refused(Reason.MEDIA_ERROR)
        assert jingle.reason_text == "the file is too large"

    def test_too_many_offers_at_once_from_one_account_are_busy(self) -> None:
        self.transfer.config["max_per_peer"] = 1
        self.offered(CONTENT, sid="j1")
        self.offered(b"another file", sid="j2")
        iq, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert (jingle.sid, jingle.reason) == ("j2", Reason.BUSY)
        assert self.incoming().size == len(CONTENT)


def stream_offer() -> TransferOffer:
    return TransferOffer.stream(
        transfer_id=os.urandom(16),
        salt=os.urandom(32),
        suite=1,
        chunk_size=4096,
        name="pipe",
    )


class TestStreamVetting(ReceivingCase):
    """A stream's offer (spec/otr.md 5.4): no size in Jingle either."""

    def offer_described(self, offer: TransferOffer, size: int | None) -> None:
        self.secure()
        self.offer_inside_otr(offer)
        jingle = initiate(offer, IBBTransport(sid="a"), resumable=False)
        content = jingle.contents[0]
        assert content.description is not None
        description = dataclasses.replace(content.description, size=size)
        jingle = dataclasses.replace(
            jingle, contents=(dataclasses.replace(content, description=description),)
        )
        assert self.peer_says(jingle, "i1")["type"] == "result"

    def refused(self) -> None:
        jingle = self.ended(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "the Jingle size does not match the OTR offer"
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_offer(timeout=0.01))

    def test_a_stream_is_offered_without_a_size_and_taken_as_one(self) -> None:
        self.offer_described(stream_offer(), None)
        incoming = self.incoming()
        assert incoming.is_stream
        assert (incoming.size, incoming.sealed_size) == (0, None)
        with pytest.raises(LocalProtocolError, match="accept_stream"):
            self.run_coro(incoming.accept("."))

    def test_a_file_is_not_taken_as_a_stream(self) -> None:
        self.offered()
        incoming = self.incoming()
        assert not incoming.is_stream
        with pytest.raises(LocalProtocolError, match="accept"):
            self.run_coro(incoming.accept_stream())

    def test_a_stream_with_a_jingle_size_is_refused(self) -> None:
        # 90: the sealed size of an empty file with this offer's parameters.
        self.offer_described(stream_offer(), 90)
        self.refused()

    def test_a_file_without_a_jingle_size_is_refused(self) -> None:
        # The servers strip the size of a file's offer: it is not a stream
        # inside OTR, so it is not taken as one.
        self.offer_described(file_offer(CONTENT), None)
        self.refused()


class TestQueueFull(ReceivingCase):
    settings: ClassVar[dict[str, Any]] = {"max_pending_offers": 1}

    def test_a_full_queue_is_busy(self) -> None:
        self.offered(CONTENT, sid="j1")
        self.offered(b"another file", sid="j2")
        iq, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert (jingle.sid, jingle.reason, jingle.reason_text) == (
            "j2",
            Reason.BUSY,
            "too many offers waiting",
        )


class TestUntrusted(ReceivingCase):
    trusted: ClassVar[bool] = False

    def test_an_untrusted_fingerprint_is_refused(self) -> None:
        self.transfer.config["otr_offer_wait"] = 0.05
        self.offered()
        jingle = self.ended(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "fingerprint not trusted"

    def test_a_trust_policy_that_says_no_refuses_the_offer(self) -> None:
        asked: list[tuple[str, bytes]] = []

        def policy(peer: str, fingerprint: bytes) -> bool:
            asked.append((peer, fingerprint))
            return False

        self.transfer.config["accept_untrusted"] = policy
        self.otr.config["untrusted_offers"] = 2
        self.offered()
        jingle = self.ended(Reason.SECURITY_ERROR)
        assert jingle.reason_text == "fingerprint not trusted"
        assert asked == [(PEER, self.their_fingerprint)]

    def test_untrusted_offers_have_a_small_share_of_the_queue(self) -> None:
        self.transfer.config["accept_untrusted"] = True
        self.transfer.config["max_untrusted_offers"] = 1
        self.otr.config["untrusted_offers"] = 4
        self.offered(CONTENT, sid="j1")
        self.offered(b"another file", sid="j2")
        iq, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert (jingle.sid, jingle.reason, jingle.reason_text) == (
            "j2",
            Reason.BUSY,
            "too many offers waiting",
        )
        assert self.incoming().size == len(CONTENT)

    def test_with_accept_untrusted_the_offer_comes_marked_untrusted(self) -> None:
        self.transfer.config["accept_untrusted"] = True
        self.otr.config["untrusted_offers"] = 2
        self.offered()
        incoming = self.incoming()
        assert not incoming.trusted
        assert incoming.fingerprint == self.their_fingerprint


class TestResume(ReceivingCase):
    """A receipt that breaks off keeps its verified prefix and goes on with
    the sender's next offer of the same file."""

    settings: ClassVar[dict[str, Any]] = {"resume_attempts": 2, "resume_wait": 5.0}

    def broken(self, *, how: str = "truncated") -> tuple[asyncio.Task[Path], int]:
        """A receipt of half the sealed stream that breaks off; the task."""
        offer, key = self.offered(sid="j1")
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        sealed = seal(offer, key, CONTENT)
        half = len(sealed) // 2
        self.ibb_send("ibb1", sealed[:half], 4096, closing=False)
        if how == "truncated":
            # The stream ends early: the receiver ends the session itself.
            self.ibb_send("ibb1", b"", 4096, opening=False, prefix="c")
            self.ended(Reason.FAILED_TRANSPORT)
        else:
            # The sender reports the break, then its stream ends.
            self.peer_says(terminate(Reason.CONNECTIVITY_ERROR), "t1")
            self.recv(
                f'<iq type="set" id="c1" from="{PEER}" to="{ME}">'
                f'<close xmlns="{NS_IBB}" sid="ibb1"/></iq>'
            )
            self.answered("c1")
        [receipt] = self.transfer._receipts.values()
        session = receipt.task
        assert session is not None
        self.until(session.done)  # this session is over
        assert not task.done()  # the receipt waits for the rest
        return task, half

    def the_rest(self, task: asyncio.Task[Path], *, sid: str = "j2") -> int:
        """The sender offers the file again; we ask for the rest, it comes."""
        offer, key = self.offered(
            sid=sid, transport=IBBTransport(sid=f"ibb-{sid}", block_size=4096)
        )
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert content.description is not None
        assert content.description.range is not None
        start = content.description.range.offset
        assert 0 < start < len(CONTENT)
        assert start % offer.chunk_size == 0  # whole verified chunks
        self.ibb_send(
            f"ibb-{sid}", seal(offer, key, CONTENT[start:]), 4096, prefix=f"r{sid}"
        )
        self.peer_digest(offer, CONTENT)  # of the whole file, prefix included
        self.finish()
        path = self.run_coro(task)
        assert path.read_bytes() == CONTENT
        assert [v.stored for v in self.verdicts()] == [True]  # nothing for the break
        assert sorted(p.name for p in self.dir.iterdir()) == ["report.txt"]
        return start

    def test_a_truncated_stream_goes_on_with_the_next_offer(self) -> None:
        task, _ = self.broken()
        self.the_rest(task)

    def test_a_break_the_sender_reports_goes_on_with_the_next_offer(self) -> None:
        task, _ = self.broken(how="reported")
        self.the_rest(task)

    def test_a_sender_whose_file_changed_in_the_kept_prefix_is_refused(self) -> None:
        # The next offer names the same file (same id, size and name), but
        # the file changed in the part we kept: the rest verifies chunk by
        # chunk, the whole file's SHA-256 does not. Nothing is stored.
        task, _ = self.broken()
        changed = bytearray(CONTENT)
        changed[100:104] = b"EDIT"
        offer, key = self.offered(
            sid="j2", transport=IBBTransport(sid="ibb-j2", block_size=4096)
        )
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert content.description is not None
        assert content.description.range is not None
        start = content.description.range.offset
        assert start > 100
        self.ibb_send("ibb-j2", seal(offer, key, changed[start:]), 4096, prefix="n")
        self.peer_digest(offer, bytes(changed))
        self.ended(Reason.SECURITY_ERROR)
        with pytest.raises(IntegrityError):
            self.run_coro(task)
        [verdict] = self.verdicts()
        assert not verdict.stored
        assert list(self.dir.iterdir()) == []  # the kept prefix is gone too

    def test_a_new_offer_while_the_stream_hangs_takes_over(self) -> None:
        offer, key = self.offered(sid="j1")
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        sealed = seal(offer, key, CONTENT)
        self.ibb_send("ibb1", sealed[: len(sealed) // 2], 4096, closing=False)
        # No end, no more data: the sender went on with a new offer. The
        # stale receipt is stopped (its session cancelled) and the new
        # offer continues it.
        second, key2 = self.offered(
            sid="j2", transport=IBBTransport(sid="ibb-j2", block_size=4096)
        )
        iq, stale = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert (stale.sid, stale.reason) == ("j1", Reason.CANCEL)
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert content.description is not None
        # (Blocks still being gathered when the stream was given up were
        # never verified: the rest may be all of it.)
        wanted = content.description.range
        start = wanted.offset if wanted is not None else 0
        self.ibb_send("ibb-j2", seal(second, key2, CONTENT[start:]), 4096, prefix="n")
        self.peer_digest(second, CONTENT)
        self.finish()
        assert self.run_coro(task).read_bytes() == CONTENT

    def test_without_an_offer_of_the_rest_the_break_is_raised(self) -> None:
        self.transfer.config["resume_wait"] = 0.05
        task, _ = self.broken()
        with pytest.raises(StreamTruncated):
            self.run_coro(task)
        # The verified prefix stays for a later offer (keep_partial).
        assert [p for p in self.dir.iterdir() if p.name != "report.txt"]

    def test_a_later_offer_resumes_from_the_kept_prefix(self) -> None:
        self.transfer.config["resume_wait"] = 0.05
        task, _ = self.broken()
        with pytest.raises(StreamTruncated):
            self.run_coro(task)
        offer, key = self.offered(
            sid="j2", transport=IBBTransport(sid="ibb-j2", block_size=4096)
        )
        incoming = self.incoming()
        kept = self.run_coro(asyncio.to_thread(incoming.resumes_from, self.dir))
        assert 0 < kept < len(CONTENT)
        task = self.start(incoming.accept(self.dir))
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert content.description is not None
        assert content.description.range == Range(offset=kept)
        self.ibb_send("ibb-j2", seal(offer, key, CONTENT[kept:]), 4096, prefix="n")
        self.peer_digest(offer, CONTENT)
        self.finish()
        assert self.run_coro(task).read_bytes() == CONTENT

    def test_without_keep_partial_nothing_stays(self) -> None:
        self.transfer.config["resume_wait"] = 0.05
        self.transfer.config["keep_partial"] = False
        task, _ = self.broken()
        with pytest.raises(StreamTruncated):
            self.run_coro(task)
        assert list(self.dir.iterdir()) == []

    def test_a_file_received_lately_is_confirmed_without_asking(self) -> None:
        offer, key = self.offered(sid="j1")
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        self.peer_digest(offer, CONTENT)
        self.finish()
        path = self.run_coro(task)
        # The sender did not hear of the end and offers the file again: we
        # ask for nothing more, check the empty rest and the file, and end
        # with success ourselves; the application is not asked again.
        again, key2 = self.offered(
            sid="j2", transport=IBBTransport(sid="ibb-j2", block_size=4096)
        )
        _, accept = self.accepted()
        content = accept.content
        assert content is not None
        assert content.description is not None
        assert content.description.range == Range(offset=len(CONTENT))
        self.ibb_send("ibb-j2", seal(again, key2, b""), 4096, prefix="n")
        self.peer_digest(again, CONTENT)  # it hashed the whole file once more
        self.finish()
        assert [(v.stored, v.sha256) for v in self.verdicts()] == [(True, SHA)] * 2
        assert path.read_bytes() == CONTENT
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_offer(timeout=0.01))

    def test_a_file_changed_since_is_offered_to_the_application(self) -> None:
        offer, key = self.offered(sid="j1")
        task = self.start(self.incoming().accept(self.dir))
        self.accepted()
        self.ibb_send("ibb1", seal(offer, key, CONTENT), 4096)
        self.peer_digest(offer, CONTENT)
        self.finish()
        self.run_coro(task).write_bytes(b"edited since")
        self.offered(sid="j2", transport=IBBTransport(sid="ibb-j2"))
        assert self.incoming().size == len(CONTENT)


class TestWithdrawn(ReceivingCase):
    settings: ClassVar[dict[str, Any]] = {"max_pending_offers": 1}

    def test_a_withdrawn_offer_makes_room_in_a_full_queue(self) -> None:
        self.offered(CONTENT, sid="j1")
        self.until(lambda: self.transfer._offers.qsize() == 1)
        self.peer_says(terminate(Reason.CANCEL), "t1")
        self.offered(b"another file", sid="j2")
        incoming = self.incoming()
        assert incoming.size == len(b"another file")
        assert not incoming.withdrawn
