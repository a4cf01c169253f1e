"""Files to a group chat room's occupants (XEP-0045) on a real Prosody with
its ``muc`` component: only real JIDs the room shows, only trusted keys."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from slixmpp import JID
from slixmpp.plugins.xep_0004 import XEP_0004
from slixmpp.plugins.xep_0045 import XEP_0045
from slixmpp.xmlstream import StanzaBase
from xfer_cli.main import EXIT_VERIFY

from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, introduce, login, transfer_client
from tests.integration.test_cli_e2e import Person, events, finish, wait_ready
from xfer.errors import TransferTimeout, UntrustedPeer
from xfer.otr.trust import Verification
from xfer.testing.hostile import HostileServer
from xfer.testing.hostile.stanzas import matching
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp._slixmpp import plugin
from xfer.xmpp.client import XferClient
from xfer.xmpp.muc import ANONYMOUS, UNTRUSTED

pytestmark = pytest.mark.integration

NS_MUC_USER = "http://jabber.org/protocol/muc#user"


@pytest.fixture(scope="module")
def muc_prosody() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    accounts = {**ACCOUNTS, "owner": "owner-password"}
    with LocalProsody(accounts=accounts, muc=True) as server:
        yield server


@pytest.fixture
async def made() -> AsyncIterator[list[XferClient]]:
    clients: list[XferClient] = []
    yield clients
    for c in clients:
        await c.stop()


def muc_of(c: XferClient) -> XEP_0045:
    c.register_plugin("xep_0045")
    c.register_plugin("xep_0004")
    return plugin(c, "xep_0045", XEP_0045)


async def enter(c: XferClient, room: str, nick: str) -> None:
    await muc_of(c).join_muc_wait(JID(room), nick, maxstanzas=0, timeout=10)


async def open_room(
    server: LocalProsody, made: list[XferClient], name: str, *, whois: str
) -> str:
    """A room made by ``owner`` (its moderator), showing real JIDs to
    ``whois`` ("anyone": non-anonymous; "moderators": semi-anonymous)."""
    room = f"{name}-{os.urandom(3).hex()}@{server.muc_jid}"
    # A resource of its own: a second log-in under the same one would push
    # the first out (and a client that reconnects would push back).
    owner = await login(server, "owner", f"o-{name}")
    made.append(owner)
    muc = muc_of(owner)
    await enter(owner, room, "owner")
    form = plugin(owner, "xep_0004", XEP_0004).make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
    form.add_field(var="muc#roomconfig_whois", value=whois)
    await muc.set_room_config(room, form)
    return room


async def test_room_trusted_untrusted_ours_and_a_lying_key(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    server = muc_prosody
    room = await open_room(server, made, "open", whois="anyone")
    alice = await transfer_client(server, "alice", "send", tmp_path / "a-id")
    alice_too = await login(server, "alice", "phone")  # our own other client
    bob = await transfer_client(server, "bob", "b", tmp_path / "b-id")
    carol = await transfer_client(server, "carol", "c", tmp_path / "c-id")
    dave = await transfer_client(server, "dave", "d", tmp_path / "d-id")
    made += [alice, alice_too, bob, carol, dave]
    introduce(alice, bob)
    # alice trusts *a* key for dave, not the one dave's client holds: the
    # room can name dave, but the OTR check decides.
    alice.plugin["xfer_otr"].trust.trust(
        f"dave@{server.domain}", os.urandom(20), Verification.MANUAL, now=0
    )
    for c, nick in ((alice_too, "alice2"), (bob, "bob"), (carol, "carol")):
        await enter(c, room, nick)
    await enter(dave, room, "dave")
    transfer = alice.plugin["xfer_transfer"]
    assert await transfer.is_room(room)
    assert not await transfer.is_room(f"bob@{server.domain}")
    peers, skipped = await transfer.room_recipients(room)
    assert sorted(peers) == [f"bob@{server.domain}", f"dave@{server.domain}"]
    assert skipped == {
        f"{room}/owner (owner@{server.domain})": UNTRUSTED,
        f"{room}/carol (carol@{server.domain})": UNTRUSTED,
    }
    # alice left the room again.
    assert JID(room) not in muc_of(alice).get_joined_rooms()
    src = tmp_path / "f.bin"
    data = os.urandom(700_000)
    src.write_bytes(data)

    async def bob_takes() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=60)
        return await offer.accept(tmp_path / "bob-got")

    result, got = await asyncio.gather(
        transfer.send_file_to_many(peers, src), bob_takes()
    )
    assert got.read_bytes() == data
    assert list(result.sent) == [f"bob@{server.domain}"]
    assert isinstance(result.failed[f"dave@{server.domain}"], UntrustedPeer)
    for c in (dave, carol):  # nothing was offered to an untrusted key
        with pytest.raises(TransferTimeout):
            await c.plugin["xfer_transfer"].next_offer(timeout=0.5)


async def test_semi_anonymous_room_not_moderator_skips_everyone(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    server = muc_prosody
    room = await open_room(server, made, "semi", whois="moderators")
    alice = await transfer_client(server, "alice", "send", tmp_path / "a-id")
    bob = await transfer_client(server, "bob", "b", tmp_path / "b-id")
    made += [alice, bob]
    introduce(alice, bob)  # trusted, but the room hides who bob is
    await enter(bob, room, "bob")
    peers, skipped = await alice.plugin["xfer_transfer"].room_recipients(room)
    assert peers == []
    assert skipped == {f"{room}/owner": ANONYMOUS, f"{room}/bob": ANONYMOUS}
    with pytest.raises(TransferTimeout):
        await bob.plugin["xfer_transfer"].next_offer(timeout=0.5)


async def test_cli_send_to_a_room(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    server = muc_prosody
    room = await open_room(server, made, "cli", whois="anyone")
    alice, bob = Person("alice", server, tmp_path), Person("bob", server, tmp_path)
    alice.trusts(bob)
    bob.trusts(alice)
    bob_in_room = await login(server, "bob", "muc")  # bob's chat client
    carol = await login(server, "carol", "muc")
    made += [bob_in_room, carol]
    await enter(bob_in_room, room, "bob")
    await enter(carol, room, "carol")
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(50_000))
    inbox = tmp_path / "bob-in"
    receiver = bob.start("receive", "--yes", "--dir", str(inbox), "--json")
    try:
        wait_ready(receiver)
        sent = alice.run("send", str(src), "--to", room, "--json", timeout=90)
    finally:
        finish(receiver, received=1)
    assert sent.returncode == 0, sent.stderr
    got = events(sent.stdout)
    skipped = {str(e["peer"]): e["reason"] for e in got if e["event"] == "skipped"}
    assert skipped == {
        f"{room}/owner (owner@{server.domain})": UNTRUSTED,
        f"{room}/carol (carol@{server.domain})": UNTRUSTED,
    }
    assert [str(e["peer"]).split("/")[0] for e in got if e["event"] == "sent"] == [
        bob.jid
    ]
    assert (inbox / "notes.txt").read_bytes() == src.read_bytes()
    # A semi-anonymous room where alice is no moderator: no one, exit 7.
    semi = await open_room(server, made, "cli-semi", whois="moderators")
    await enter(carol, semi, "carol")
    refused = alice.run("send", str(src), "--to", semi, "--json", timeout=60)
    assert refused.returncode == EXIT_VERIFY, refused.stderr
    assert "anonymous" in refused.stderr
    reasons = [e["reason"] for e in events(refused.stdout) if e["event"] == "skipped"]
    assert reasons == [ANONYMOUS, ANONYMOUS]


async def test_a_room_lying_about_a_real_jid_gets_no_file_to_the_liar(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    """The room (here: a hostile server in front of alice) says carol's
    occupant is bob, whom alice trusts. alice offers to bob, inside OTR to
    bob's trusted key; carol, the occupant actually there, gets nothing."""
    server = muc_prosody
    room = await open_room(server, made, "liar", whois="anyone")
    async with HostileServer("127.0.0.1", server.c2s_port) as hostile:
        alice = await transfer_client(
            server, "alice", "send", tmp_path / "a-id", via=hostile
        )
        bob = await transfer_client(server, "bob", "b", tmp_path / "b-id")
        carol = await transfer_client(server, "carol", "c", tmp_path / "c-id")
        made += [alice, bob, carol]
        introduce(alice, bob)
        introduce(alice, carol)  # carol trusts alice, alice does not trust her
        alice.plugin["xfer_otr"].trust.untrust(f"carol@{server.domain}")
        await enter(carol, room, "carol")  # bob is not in the room at all
        item = f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item"

        def claim_bob(element: ET.Element) -> ET.Element:
            found = element.find(item)
            assert found is not None
            found.set("jid", f"bob@{server.domain}/elsewhere")
            return element

        lie = hostile.rewrite(
            matching("presence", from_=f"{room}/carol", child=item),
            claim_bob,
            "to_client",
        )
        peers, skipped = await alice.plugin["xfer_transfer"].room_recipients(room)
        assert lie.matched >= 1
        assert peers == [f"bob@{server.domain}"]  # the lie got through ...
        assert skipped == {f"{room}/owner (owner@{server.domain})": UNTRUSTED}
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(100_000))

        async def bob_takes() -> Path:
            offer = await bob.plugin["xfer_transfer"].next_offer(timeout=60)
            return await offer.accept(tmp_path / "bob-got")

        result, got = await asyncio.gather(
            alice.plugin["xfer_transfer"].send_file_to_many(peers, src), bob_takes()
        )
        # ... but the file went to bob's trusted key, not to the occupant.
        assert got.read_bytes() == src.read_bytes()
        assert list(result.sent) == [f"bob@{server.domain}"]
        with pytest.raises(TransferTimeout):
            await carol.plugin["xfer_transfer"].next_offer(timeout=0.5)
        assert hostile.errors == []


async def test_one_room_trusted_untrusted_and_anonymous_occupants(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    """The three kinds in one room: bob (trusted, shown) gets the file;
    dave (shown, untrusted) and carol (trusted, but the room hides her real
    JID: a hostile server in front of alice strips it, as a room showing it
    to some only would) are skipped with their reasons and get nothing."""
    server = muc_prosody
    d = server.domain
    room = await open_room(server, made, "mixed", whois="anyone")
    async with HostileServer("127.0.0.1", server.c2s_port) as hostile:
        alice = await transfer_client(
            server, "alice", "send", tmp_path / "a-id", via=hostile
        )
        bob = await transfer_client(server, "bob", "b", tmp_path / "b-id")
        carol = await transfer_client(server, "carol", "c", tmp_path / "c-id")
        dave = await transfer_client(server, "dave", "d", tmp_path / "d-id")
        made += [alice, bob, carol, dave]
        introduce(alice, bob)
        introduce(alice, carol)
        for c, nick in ((bob, "bob"), (carol, "carol"), (dave, "dave")):
            await enter(c, room, nick)
        item = f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item"

        def hide(element: ET.Element) -> ET.Element:
            found = element.find(item)
            assert found is not None
            found.attrib.pop("jid", None)
            return element

        hidden = hostile.rewrite(
            matching("presence", from_=f"{room}/carol", child=item),
            hide,
            "to_client",
        )
        transfer = alice.plugin["xfer_transfer"]
        peers, skipped = await transfer.room_recipients(room)
        assert hidden.matched >= 1
        assert peers == [f"bob@{d}"]
        assert skipped == {
            f"{room}/owner (owner@{d})": UNTRUSTED,
            f"{room}/dave (dave@{d})": UNTRUSTED,
            f"{room}/carol": ANONYMOUS,
        }
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(200_000))

        async def bob_takes() -> Path:
            offer = await bob.plugin["xfer_transfer"].next_offer(timeout=60)
            return await offer.accept(tmp_path / "bob-got")

        result, got = await asyncio.gather(
            transfer.send_file_to_many(peers, src), bob_takes()
        )
        assert got.read_bytes() == src.read_bytes()
        assert list(result.sent) == [f"bob@{d}"]
        for c in (carol, dave):
            with pytest.raises(TransferTimeout):
                await c.plugin["xfer_transfer"].next_offer(timeout=0.5)
        assert hostile.errors == []


async def test_is_room_asks_once_and_never_for_a_full_jid(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient]
) -> None:
    """A single recipient costs no disco query when named by full JID, one
    per domain (for the process) when named by bare JID; a room is still
    found, and found again without asking."""
    server = muc_prosody
    room = await open_room(server, made, "disco", whois="anyone")
    alice = await transfer_client(server, "alice", "send", tmp_path / "a-id")
    made.append(alice)
    asked: list[str] = []

    def watch(stanza: StanzaBase) -> StanzaBase:
        query = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
        if stanza.name == "iq" and query is not None and stanza["type"] == "get":
            asked.append(str(stanza["to"]))
        return stanza

    alice.add_filter("out", watch)
    transfer = alice.plugin["xfer_transfer"]
    d = server.domain
    assert not await transfer.is_room(f"bob@{d}/phone")
    assert asked == []
    assert not await transfer.is_room(f"bob@{d}")
    assert asked == [d]
    assert not await transfer.is_room(f"carol@{d}")  # same domain: known
    assert not await transfer.is_room(f"bob@{d}")
    assert asked == [d]
    assert await transfer.is_room(room)
    assert asked == [d, server.muc_jid, room]
    assert await transfer.is_room(room)
    assert not await transfer.is_room(f"{room}/someone")  # an occupant
    assert asked == [d, server.muc_jid, room]
    # Not a room (yet) on the service: asked each time, never kept as "no".
    free = f"free-{os.urandom(3).hex()}@{server.muc_jid}"
    assert not await transfer.is_room(free)
    assert asked == [d, server.muc_jid, room, free]
    # Another client has its own view.
    bob = await transfer_client(server, "bob", "b", tmp_path / "b-id")
    made.append(bob)
    assert await bob.plugin["xfer_transfer"].is_room(room)
