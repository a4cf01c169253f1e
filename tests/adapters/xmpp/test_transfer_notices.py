"""What ``xfer_transfer`` tells the application besides the offers it takes
(``next_notice``, the event ``xfer_notice``), through stanzas against a
scripted peer: text inside OTR, a plain Jingle file offer and a legacy SI
offer, each refused with xfer's reason; and what a flood of them costs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters.xmpp.slix import (
    ME,
    PEER,
    TransferCase,
    file_offer,
    initiate,
)
from tests.adapters.xmpp.test_legacy import si_offer
from xfer.errors import TransferTimeout
from xfer.jingle import Action, Reason, Role
from xfer.jingle.files import FileDescription
from xfer.jingle.wire import NS_FILE_TRANSFER, Content, IBBTransport, Jingle
from xfer.notices import (
    MAX_TEXT,
    PEER_BURST,
    TOTAL_BURST,
    VIA_JINGLE,
    VIA_SI,
    PeerMessage,
    RefusedOffer,
)
from xfer.transfer.policy import ENCRYPTED_ONLY
from xfer.xmpp.transfer.notices import MAX_WAITING, NoticeBoard

if TYPE_CHECKING:
    from xfer.notices import Notice


def plain_offer(name: str = "x.pdf", size: int = 1_234_567, sid: str = "p1") -> Jingle:
    """A XEP-0234 offer as other clients send it: the file's own name and
    size in the clear, no ``<encrypted/>``."""
    return Jingle(
        action=Action.SESSION_INITIATE,
        sid=sid,
        initiator=PEER,
        contents=(
            Content(
                name="a-file-offer",
                creator=Role.INITIATOR,
                senders="initiator",
                description=FileDescription(
                    name=name, size=size, media_type="application/pdf"
                ),
                application=NS_FILE_TRANSFER,
                transport=IBBTransport(sid="ibb-p1", block_size=4096),
            ),
        ),
    )


class NoticesCase(TransferCase):
    def setUp(self) -> None:
        super().setUp()
        self.raised: list[Any] = []
        self.xmpp.add_event_handler("xfer_notice", self.raised.append)
        # The bounds refill with time; a frozen clock keeps a slow run (a
        # loaded machine) from earning an extra notice halfway through.
        self.transfer.notices._clock = lambda: 0.0

    def notice(self) -> Notice:
        return self.run_coro(self.transfer.next_notice(timeout=5))

    def no_notice(self) -> None:
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_notice(timeout=0.01))


class TestRefusedOffers(NoticesCase):
    def test_a_legacy_si_offer_is_forbidden_with_the_reason(self) -> None:
        self.recv(si_offer())
        reply = self.answered("si1")
        # Not slixmpp's "No handlers registered" (feature-not-implemented).
        assert reply["type"] == "error"
        assert (reply["error"]["condition"], reply["error"]["type"]) == (
            "forbidden",
            "cancel",
        )
        assert reply["error"]["text"] == ENCRYPTED_ONLY
        expected = RefusedOffer(
            peer=PEER, name="x.pdf", size=1_234_567, via=VIA_SI, reason=ENCRYPTED_ONLY
        )
        assert self.notice() == expected
        assert self.raised == [expected]
        self.no_notice()

    def test_a_plain_jingle_offer_is_refused_and_reported(self) -> None:
        answer = self.peer_says(plain_offer(), "init-p1")
        assert answer["type"] == "result"  # acknowledged, then refused
        iq, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        self.ack(iq)
        assert (jingle.reason, jingle.reason_text) == (
            Reason.SECURITY_ERROR,
            ENCRYPTED_ONLY,
        )
        expected = RefusedOffer(
            peer=PEER,
            name="x.pdf",
            size=1_234_567,
            via=VIA_JINGLE,
            reason=ENCRYPTED_ONLY,
        )
        assert self.notice() == expected
        assert self.raised == [expected]
        # Still a stranger's offer: it does not learn that we are online.
        self.pump()
        assert not [s for s in self.outbox if s.name == "presence"]
        with pytest.raises(TransferTimeout):
            self.run_coro(self.transfer.next_offer(timeout=0.01))

    def test_other_refusals_are_no_notice(self) -> None:
        # An xfer offer that fails a later check is not "unencrypted".
        self.transfer.config["otr_offer_wait"] = 0.05
        self.secure()
        offer = file_offer(b"data")  # never sent inside OTR
        self.peer_says(initiate(offer, IBBTransport(sid="a")), "i1")
        _, jingle = self.next_jingle(Action.SESSION_TERMINATE)
        assert jingle.reason_text == "no matching offer inside OTR"
        self.no_notice()
        assert self.raised == []

    def test_a_flood_of_si_offers_is_answered_but_bounded(self) -> None:
        n = PEER_BURST + 40
        for i in range(n):
            self.recv(si_offer(f"f{i}", name=f"spam{i}.exe"))
        answers = [self.answered(f"f{i}") for i in range(n)]
        assert {a["error"]["condition"] for a in answers} == {"forbidden"}
        board = self.transfer.notices
        assert len(self.raised) == PEER_BURST
        assert [n.name for n in board.waiting()] == [
            f"spam{i}.exe" for i in range(PEER_BURST)
        ]
        assert board.held_back == n - PEER_BURST

    def test_made_up_accounts_share_one_bound(self) -> None:
        n = TOTAL_BURST + 40
        for i in range(n):
            self.recv(si_offer(f"m{i}", frm=f"m{i}@evil.example/x"))
        for i in range(n):
            assert self.answered(f"m{i}")["type"] == "error"
        assert len(self.raised) == TOTAL_BURST
        assert len(self.transfer.notices.waiting()) == MAX_WAITING
        assert self.transfer.notices.held_back == n - TOTAL_BURST


class TestTextInsideOTR(NoticesCase):
    def test_text_from_a_trusted_peer(self) -> None:
        self.secure()
        self.peer_session().send("hello, are you there?")
        self.from_peer()
        expected = PeerMessage(
            peer=PEER,
            text="hello, are you there?",
            fingerprint=self.their_fingerprint,
            trusted=True,
        )
        assert self.notice() == expected
        assert self.raised == [expected]

    def test_a_long_text_is_cut(self) -> None:
        self.secure()
        self.peer_session().send("z" * 50_000)
        self.from_peer()
        notice = self.notice()
        assert isinstance(notice, PeerMessage)
        assert (len(notice.text), notice.cut) == (MAX_TEXT, True)

    def test_an_offer_inside_otr_is_no_text(self) -> None:
        self.secure()
        self.offer_inside_otr(file_offer(b"data"))
        self.no_notice()


class TestTextFromAnUntrustedPeer(NoticesCase):
    trusted = False

    def test_is_marked_untrusted(self) -> None:
        self.secure()
        self.peer_session().send("it's me, trust me")
        self.from_peer()
        notice = self.notice()
        assert isinstance(notice, PeerMessage)
        assert notice.fingerprint == self.their_fingerprint
        assert not notice.trusted


# -- the board alone ------------------------------------------------------------


async def test_the_board_reports_what_it_held_back() -> None:
    now = [0.0]
    raised: list[tuple[str, object]] = []
    board = NoticeBoard(
        lambda name, data: raised.append((name, data)), clock=lambda: now[0]
    )

    def said(text: str) -> PeerMessage:
        return PeerMessage(peer=PEER, text=text, fingerprint=None, trusted=False)

    assert all(board.post(said(f"m{i}")) for i in range(PEER_BURST))
    assert not board.post(said("too many"))
    assert not board.post(said("again"))
    now[0] = 60.0
    assert board.post(said("later"))
    texts = [(await board.next(0)) for _ in range(PEER_BURST + 1)]
    assert [t.suppressed for t in texts] == [0] * PEER_BURST + [2]
    assert [name for name, _ in raised] == ["xfer_notice"] * (PEER_BURST + 1)
    with pytest.raises(TransferTimeout):
        await board.next(0.01)


async def test_the_board_keeps_the_newest_when_nobody_asks() -> None:
    board = NoticeBoard(lambda *_: None, max_waiting=3)
    for i in range(5):
        board.post(
            RefusedOffer(peer=f"p{i}@x", name=None, size=None, via=VIA_SI, reason="r")
        )
    assert [n.peer for n in board.waiting()] == ["p2@x", "p3@x", "p4@x"]


async def test_a_waiting_caller_gets_the_next_notice() -> None:
    board = NoticeBoard(lambda *_: None)
    waiter = asyncio.ensure_future(board.next(5))
    await asyncio.sleep(0)
    refused = RefusedOffer(peer=ME, name="a", size=1, via=VIA_JINGLE, reason="r")
    board.post(refused)
    assert await waiter == refused
