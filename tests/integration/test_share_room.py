"""Sharing a folder with a group chat (spec/share.md section 8) on a real
Prosody with its ``muc`` component: the accounts present in the room with a
trusted fingerprint may list and fetch, as they come and go."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slixmpp import JID

import xfer.xmpp.share as share_module
from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, introduce, transfer_client
from tests.integration.test_cli_e2e import Person
from tests.integration.test_muc import NS_MUC_USER, enter, made, muc_of, open_room
from tests.integration.test_share_cli import stop
from xfer.errors import NotSecure, SharingRefused
from xfer.otr.trust import Verification
from xfer.testing.hostile import HostileServer
from xfer.testing.hostile.stanzas import matching
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp.client import XferClient
from xfer.xmpp.muc import UNTRUSTED
from xfer.xmpp.share import ShareEvent, XferShare

pytestmark = pytest.mark.integration

__all__ = ["made"]  # the fixture, shared with test_muc


@pytest.fixture(scope="module")
def muc_prosody() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    accounts = {**ACCOUNTS, "owner": "owner-password"}
    with LocalProsody(accounts=accounts, muc=True) as server:
        yield server


async def sharing(
    server: LocalProsody,
    user: str,
    tmp_path: Path,
    made: list[XferClient],
    via: HostileServer | None = None,
) -> XferClient:
    c = await transfer_client(
        server, user, "share", tmp_path / f"{user}-id", via=via, offer_timeout=20.0
    )
    c.register_plugin("xfer_share", module=share_module)
    made.append(c)
    return c


def shares(c: XferClient) -> XferShare:
    found = c.plugin["xfer_share"]
    assert isinstance(found, XferShare)
    return found


def trusts(one: XferClient, other: XferClient) -> None:
    """``one`` trusts ``other``'s key (only this way round)."""
    key = other.plugin["xfer_otr"].account.private_key.public.fingerprint
    one.plugin["xfer_otr"].trust.trust(
        other.boundjid.bare, key, Verification.MANUAL, now=0
    )


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def refused_code(c: XferClient, sharer: str) -> str:
    with pytest.raises(SharingRefused) as refused:
        await shares(c).list_shared(sharer)
    return str(refused.value.code)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2024").mkdir(parents=True)
    (root / "2024" / "a.jpg").write_bytes(os.urandom(300_000))
    (root / "top.txt").write_text("top\n")
    return root


async def test_room_members_come_and_go(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient], folder: Path
) -> None:
    server = muc_prosody
    d = server.domain
    room = await open_room(server, made, "share", whois="anyone")
    alice = await sharing(server, "alice", tmp_path, made)
    bob = await sharing(server, "bob", tmp_path, made)
    carol = await sharing(server, "carol", tmp_path, made)
    dave = await sharing(server, "dave", tmp_path, made)
    introduce(alice, bob)
    introduce(alice, dave)
    trusts(carol, alice)  # carol can ask; alice does not trust her (yet)
    await enter(bob, room, "bob")
    await enter(carol, room, "carol")
    events: list[ShareEvent] = []
    sharer = await shares(alice).share_room(folder, room, report=events.append)
    try:
        assert JID(room) in muc_of(alice).get_joined_rooms()
        seen = {(e.kind, e.peer, e.detail) for e in events}
        assert seen == {
            ("skipped", f"{room}/owner (owner@{d})", UNTRUSTED),
            ("skipped", f"{room}/carol (carol@{d})", UNTRUSTED),
            ("member", f"{room}/bob (bob@{d})", ""),
        }
        # bob, present and trusted, lists and fetches.
        entries = await shares(bob).list_shared(alice.boundjid.bare)
        assert [e.path for e in entries] == ["2024", "top.txt"]
        (tmp_path / "bob").mkdir()
        got = await shares(bob).fetch(alice.boundjid.bare, ["2024"], tmp_path / "bob")
        assert got.ok
        assert (tmp_path / "bob" / "2024" / "a.jpg").read_bytes() == (
            folder / "2024" / "a.jpg"
        ).read_bytes()
        # carol is present but untrusted: refused, in words.
        assert await refused_code(carol, alice.boundjid.bare) == "not-allowed"
        # dave is trusted but not in the room: refused; once he joins, served.
        assert await refused_code(dave, alice.boundjid.bare) == "not-allowed"
        await enter(dave, room, "dave")
        await until(lambda: f"dave@{d}" in sharer.members, "dave is a member")
        assert ("member", f"{room}/dave (dave@{d})") in {
            (e.kind, e.peer) for e in events
        }
        assert await shares(dave).list_shared(alice.boundjid.bare)
        # carol, present, becomes trusted: served from then on.
        trusts(alice, carol)
        assert await shares(carol).list_shared(alice.boundjid.bare)
        # bob leaves: refused afterwards.
        muc_of(bob).leave_muc(JID(room), "bob")
        await until(lambda: f"bob@{d}" not in sharer.members, "bob left")
        assert ("left", f"{room}/bob (bob@{d})") in {(e.kind, e.peer) for e in events}
        assert await refused_code(bob, alice.boundjid.bare) == "not-allowed"
    finally:
        await sharer.close()
    # alice left the room with the share; nobody is served.
    await until(lambda: JID(room) not in muc_of(alice).get_joined_rooms(), "alice left")
    assert sharer.members == frozenset()
    assert await refused_code(dave, alice.boundjid.bare) == "not-sharing"


async def test_a_room_that_will_not_let_us_in_shares_nothing(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient], folder: Path
) -> None:
    server = muc_prosody
    alice = await sharing(server, "alice", tmp_path, made)
    bob = await sharing(server, "bob", tmp_path, made)
    introduce(alice, bob)
    with pytest.raises(NotSecure):
        await shares(alice).share_room(folder, f"nobody@{server.domain}")
    assert await refused_code(bob, alice.boundjid.bare) == "not-sharing"


async def test_a_room_lying_about_a_real_jid_serves_no_untrusted_key(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient], folder: Path
) -> None:
    """The room (a hostile server in front of alice) says carol's occupant
    is bob, whom alice trusts. The lie makes bob a member, and bob's trusted
    key is served; carol, who is actually there, is refused: the request
    comes inside OTR from her key, for her account."""
    server = muc_prosody
    d = server.domain
    room = await open_room(server, made, "share-liar", whois="anyone")
    async with HostileServer("127.0.0.1", server.c2s_port) as hostile:
        alice = await sharing(server, "alice", tmp_path, made, via=hostile)
        bob = await sharing(server, "bob", tmp_path, made)
        carol = await sharing(server, "carol", tmp_path, made)
        introduce(alice, bob)
        trusts(carol, alice)
        await enter(carol, room, "carol")  # bob is not in the room at all
        item = f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item"

        def claim_bob(element: ET.Element) -> ET.Element:
            found = element.find(item)
            assert found is not None
            found.set("jid", f"bob@{d}/elsewhere")
            return element

        lie = hostile.rewrite(
            matching("presence", from_=f"{room}/carol", child=item),
            claim_bob,
            "to_client",
        )
        sharer = await shares(alice).share_room(folder, room)
        try:
            assert lie.matched >= 1
            # the lie got through (the owner is present, untrusted) ...
            assert sharer.members == {f"bob@{d}", f"owner@{d}"}
            assert await refused_code(carol, alice.boundjid.bare) == "not-allowed"
            # ... and serves only bob's trusted key.
            assert await shares(bob).list_shared(alice.boundjid.bare)
        finally:
            await sharer.close()
        assert hostile.errors == []


async def test_cli_share_with_a_room(
    muc_prosody: LocalProsody, tmp_path: Path, made: list[XferClient], folder: Path
) -> None:
    server = muc_prosody
    d = server.domain
    room = await open_room(server, made, "share-cli", whois="anyone")
    alice, bob = Person("alice", server, tmp_path), Person("bob", server, tmp_path)
    alice.trusts(bob)
    bob.trusts(alice)
    bob_chat = await transfer_client(server, "bob", "muc", tmp_path / "bob-chat")
    made.append(bob_chat)
    await enter(bob_chat, room, "bob")
    sharer = alice.start("share", str(folder), "--room", room)
    try:
        assert sharer.stderr is not None  # the lines for people
        lines: list[str] = []
        while not lines or not lines[-1].startswith("sharing "):
            line = sharer.stderr.readline()
            assert line, "\n".join(lines)
            lines.append(line.rstrip("\n"))
        listed = bob.run("ls", alice.jid)
        assert listed.returncode == 0, listed.stderr
        assert "top.txt" in listed.stdout
    finally:
        code, _out, err = stop(sharer)
    assert code == 0, err
    text = "\n".join(lines)
    assert f"{room}/owner (owner@{d}) is in the room but skipped: {UNTRUSTED}" in text
    assert f"{room}/bob (bob@{d}) is in the room: may fetch" in text
    assert f"the members of {room}" in lines[-1]
    assert "stopped sharing" in err
