"""The receiver's half of finding each other after a break
(:class:`xfer.xmpp.transfer.rejoin.Reannouncer`): its presence goes only to
senders whose transfers wait for the rest, and to a bounded number of them;
and the sender renewing a session the receiver lost, which a bounce ends at
once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from tests.adapters.xmpp.slix import ME, PEER, TransferCase
from tests.adapters.xmpp.test_transfer_sending import CONTENT, SendingCase, opened
from xfer.errors import PeerOffline
from xfer.jingle import Action, Reason
from xfer.jingle.wire import IBBTransport
from xfer.xmpp.transfer import RESTARTED
from xfer.xmpp.transfer.rejoin import _MAX_ANSWERED

if TYPE_CHECKING:
    from slixmpp.xmlstream.stanzabase import StanzaBase

PEER_BARE = PEER.split("/", 1)[0]
OTHER_RESOURCE = f"{PEER_BARE}/phone"


class TestReannouncer(TransferCase):
    def presences(self) -> list[StanzaBase]:
        self.pump()
        return [s for s in self.outbox if s.name == "presence"]

    def waiting_for(self, bare: str) -> None:
        """A receipt from ``bare`` in progress (as after its offer was
        accepted), as the receiver keeps it while it waits for the rest."""
        self.transfer._receipts[bare, b"file-id", 10, "a.bin"] = object()

    def test_a_strangers_presence_is_not_answered(self) -> None:
        self.recv(f'<presence from="stranger@example.org/x" to="{ME}"/>')
        self.recv(f'<presence from="{PEER}" to="{ME}"/>')
        assert self.presences() == []

    def test_a_sender_whose_transfer_waits_gets_our_presence_once(self) -> None:
        self.waiting_for(PEER_BARE)
        self.recv(f'<presence from="{PEER}" to="{ME}"/>')
        self.recv(f'<presence from="{PEER}" to="{ME}"/>')
        self.recv(f'<presence from="{OTHER_RESOURCE}" to="{ME}"/>')
        told = [p["to"].full for p in self.presences()]
        assert told == [PEER, OTHER_RESOURCE]

    def test_a_new_log_in_tells_the_waiting_senders_only(self) -> None:
        self.waiting_for(PEER_BARE)
        self.xmpp.event("session_start")
        told = [p["to"].full for p in self.presences()]
        assert told == [PEER_BARE]

    def test_a_flood_of_presence_in_a_senders_name_gets_few_answers(self) -> None:
        """The sender's server forges presence from hundreds of resources of
        the sender's account: a bounded number of them are answered (and
        remembered), not every one."""
        self.waiting_for(PEER_BARE)
        for n in range(300):
            self.recv(f'<presence from="{PEER_BARE}/flood{n}" to="{ME}"/>')
        told = [p["to"].full for p in self.presences()]
        assert told == [f"{PEER_BARE}/flood{n}" for n in range(_MAX_ANSWERED)]


class RenewalCase(SendingCase):
    """The receiver restarted and could not read our offer: we renew the
    OTR session (:meth:`xfer.xmpp.transfer.rejoin.Finder.renewed`)."""

    settings: ClassVar[dict[str, Any]] = {
        "socks5_direct": False,
        "connect_timeout": 60.0,  # what a bounce must not be made to wait
    }

    def refused_as_restarted(self) -> tuple[asyncio.Task[Any], str]:
        """Our offer, refused by a restarted receiver; our D-H Commit of the
        renewal, and the task of the transfer."""
        task = self.send()
        _, jingle, _, _ = self.offered()
        before = len(self.otr_ids)
        self.end(jingle, Reason.SECURITY_ERROR, f"no matching offer; {RESTARTED}")
        self.until(lambda: (self.pump(), len(self.otr_ids) > before)[1])
        return task, self.otr_ids[-1]


class TestRenewal(RenewalCase):
    def test_a_bounce_of_the_renewal_ends_the_wait_at_once(self) -> None:
        task, commit = self.refused_as_restarted()
        self.recv(bounce(commit, PEER))
        with pytest.raises(PeerOffline, match="service-unavailable"):
            self.run_coro(asyncio.wait_for(task, 5))

    def test_a_forged_bounce_of_the_renewal_is_ignored(self) -> None:
        task, commit = self.refused_as_restarted()
        self.recv(bounce("n0t-0urs", PEER))
        self.recv(bounce(commit, "carol@example.org/c"))
        self.relay()  # the peer answers: the new session
        jingle, offer, key, sealed = self.over_ibb()
        assert opened(key, offer, sealed) == CONTENT
        self.stored(offer)
        self.end(jingle, Reason.SUCCESS)
        assert self.run_coro(asyncio.wait_for(task, 5)).size == len(CONTENT)


def bounce(msg_id: str, frm: str) -> str:
    return (
        f'<message type="error" from="{frm}" to="{ME}" id="{msg_id}">'
        '<error type="cancel"><service-unavailable '
        'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>'
    )


class TestRenewalOfAnOfferOfTheRest(RenewalCase):
    settings: ClassVar[dict[str, Any]] = {
        **RenewalCase.settings,
        "resume_attempts": 1,
    }

    def test_a_failed_renewal_is_one_attempt_not_the_end(self) -> None:
        """After a break, the offer of the rest finds a restarted receiver,
        and the renewal's D-H Commit bounces: that uses up the one attempt
        (the error says so), instead of ending the transfer as a failure of
        its own."""
        self.transfer.online.set()
        task = self.send()
        _, jingle, _, _ = self.offered()
        content = jingle.content
        assert content is not None
        assert isinstance(content.transport, IBBTransport)
        self.accept(jingle, content.transport)
        self.end(jingle, Reason.CONNECTIVITY_ERROR)  # a break
        iq, jingle = self.next_jingle(Action.SESSION_INITIATE)  # the rest
        self.ack(iq)
        before = len(self.otr_ids)
        self.end(jingle, Reason.SECURITY_ERROR, f"no matching offer; {RESTARTED}")
        self.until(lambda: (self.pump(), len(self.otr_ids) > before)[1])
        self.recv(bounce(self.otr_ids[-1], PEER))
        with pytest.raises(PeerOffline, match=r"gave up after 1 attempt to resume"):
            self.run_coro(asyncio.wait_for(task, 5))
