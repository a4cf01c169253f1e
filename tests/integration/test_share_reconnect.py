"""A sharer whose XMPP session breaks for real and is not resumed: the
server ends it (stream management cannot resume it: the connection stays
down longer than the server keeps a broken session), the client logs in
again under a new session. A shared folder goes on being served, and a
room share joins the room again (spec/share.md section 8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from slixmpp import JID

from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, introduce
from tests.integration.test_muc import enter, muc_of, open_room
from tests.integration.test_share_room import (
    folder,
    made,
    refused_code,
    shares,
    sharing,
    until,
)
from xfer.testing.faults import FaultProxy
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp.client import XferClient
from xfer.xmpp.share import ShareEvent

pytestmark = pytest.mark.integration

__all__ = ["folder", "made"]  # the fixtures, shared with test_share_room

#: How long Prosody keeps a broken session for resumption (s).
HIBERNATION = 1


@pytest.fixture(scope="module")
def short_prosody() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    accounts = {**ACCOUNTS, "owner": "owner-password"}
    with LocalProsody(accounts=accounts, muc=True, hibernation=HIBERNATION) as server:
        yield server


@pytest.fixture
async def proxy(short_prosody: LocalProsody) -> AsyncIterator[FaultProxy]:
    faults = FaultProxy("127.0.0.1", short_prosody.c2s_port)
    await faults.start()
    yield faults
    await faults.stop()


class Sessions:
    """Counts the XMPP sessions of a client: started, ended, resumed."""

    def __init__(self, c: XferClient) -> None:
        self.started = self.ended = self.resumed = 0
        c.add_event_handler("session_start", self._start)
        c.add_event_handler("session_end", self._end)
        c.add_event_handler("session_resumed", self._resumed)

    def _start(self, _event: object) -> None:
        self.started += 1

    def _end(self, _event: object) -> None:
        self.ended += 1

    def _resumed(self, _event: object) -> None:
        self.resumed += 1


async def break_session(proxy: FaultProxy, sessions: Sessions) -> None:
    """Cut the client's connection and keep it out until the server has
    ended the session; then let it back in and wait for a new session."""
    started = sessions.started
    proxy.refuse(True)
    assert proxy.cut_all() >= 1
    await asyncio.sleep(HIBERNATION + 2.0)
    proxy.refuse(False)
    for _ in range(600):
        if sessions.started > started:
            break
        await asyncio.sleep(0.05)
    assert sessions.started == started + 1, "no new session"
    assert sessions.ended >= 1
    assert sessions.resumed == 0, "the session was resumed: nothing was broken"


async def test_a_shared_folder_is_served_after_a_new_session(
    short_prosody: LocalProsody,
    proxy: FaultProxy,
    tmp_path: Path,
    made: list[XferClient],
    folder: Path,
) -> None:
    server = short_prosody
    alice = await sharing(server, "alice", tmp_path, made, via=proxy)
    sessions = Sessions(alice)
    bob = await sharing(server, "bob", tmp_path, made)
    introduce(alice, bob)
    sharer = shares(alice).share(folder, [bob.boundjid.bare])
    try:
        assert await shares(bob).list_shared(alice.boundjid.bare)
        await break_session(proxy, sessions)
        entries = await shares(bob).list_shared(alice.boundjid.bare)
        assert [e.path for e in entries] == ["2024", "top.txt"]
        (tmp_path / "bob").mkdir()
        got = await shares(bob).fetch(alice.boundjid.bare, ["2024"], tmp_path / "bob")
        assert got.ok
        assert (tmp_path / "bob" / "2024" / "a.jpg").read_bytes() == (
            folder / "2024" / "a.jpg"
        ).read_bytes()
    finally:
        await sharer.close()


async def test_a_room_share_joins_the_room_again_after_a_new_session(
    short_prosody: LocalProsody,
    proxy: FaultProxy,
    tmp_path: Path,
    made: list[XferClient],
    folder: Path,
) -> None:
    server = short_prosody
    d = server.domain
    room = await open_room(server, made, "again", whois="anyone")
    alice = await sharing(server, "alice", tmp_path, made, via=proxy)
    sessions = Sessions(alice)
    bob = await sharing(server, "bob", tmp_path, made)
    dave = await sharing(server, "dave", tmp_path, made)
    introduce(alice, bob)
    introduce(alice, dave)
    await enter(bob, room, "bob")
    events: list[ShareEvent] = []
    sharer = await shares(alice).share_room(folder, room, report=events.append)
    try:
        assert f"bob@{d}" in sharer.members
        assert await shares(bob).list_shared(alice.boundjid.bare)
        await break_session(proxy, sessions)
        # The old session's room state is gone: bob was dropped with it ...
        assert ("left", f"{room}/bob (bob@{d})", "our session ended") in {
            (e.kind, e.peer, e.detail) for e in events
        }
        # ... and comes back when alice is in the room again.
        await until(lambda: any(e.kind == "rejoined" for e in events), "rejoined")
        assert JID(room) in muc_of(alice).get_joined_rooms()
        assert f"bob@{d}" in sharer.members
        (tmp_path / "bob").mkdir()
        got = await shares(bob).fetch(alice.boundjid.bare, ["2024"], tmp_path / "bob")
        assert got.ok
        assert (tmp_path / "bob" / "2024" / "a.jpg").read_bytes() == (
            folder / "2024" / "a.jpg"
        ).read_bytes()
        # The room's presence is followed again: dave joins and is served,
        # bob leaves and is refused.
        await enter(dave, room, "dave")
        await until(lambda: f"dave@{d}" in sharer.members, "dave is a member")
        assert await shares(dave).list_shared(alice.boundjid.bare)
        muc_of(bob).leave_muc(JID(room), "bob")
        await until(lambda: f"bob@{d}" not in sharer.members, "bob left")
        assert await refused_code(bob, alice.boundjid.bare) == "not-allowed"
    finally:
        await sharer.close()
    await until(lambda: JID(room) not in muc_of(alice).get_joined_rooms(), "alice left")
    assert sharer.members == frozenset()
