"""The receiver's half of finding each other after a break
(:class:`xfer.xmpp.transfer.rejoin.Reannouncer`): its presence goes only to
senders whose transfers wait for the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.adapters.xmpp.slix import ME, PEER, TransferCase
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
