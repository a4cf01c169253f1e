"""A peer that is offline, or online without xfer, is told apart in seconds,
with the real reason, not after the OTR set-up times out (issue 15 item 5).

Every test sets ``connect_timeout`` to 30 s: the old behaviour waited that
long and then guessed ("is it online and running xfer?"); each answer here
must come well before it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import introduce, login, transfer_client
from xfer.errors import NotSecure, PeerIncapable, PeerOffline
from xfer.jingle.files import NS_FILE_TRANSFER
from xfer.jingle.wire import NS_JINGLE
from xfer.xmpp.reach import lacking

if TYPE_CHECKING:
    from pathlib import Path

    from xfer.testing.prosody import LocalProsody
    from xfer.xmpp.client import XferClient

pytestmark = pytest.mark.integration

#: The old wait; every answer must come well within it.
AKE_TIMEOUT = 30.0
WELL_BEFORE = 10.0


def fresh(prosody: LocalProsody, *names: str) -> list[str]:
    """New accounts (the server and its rosters live for the whole run)."""
    made = {f"{n}{secrets.token_hex(3)}": f"pw-{n}" for n in names}
    prosody.add_accounts(made)
    return list(made)


async def sender(prosody: LocalProsody, user: str, tmp_path: Path) -> XferClient:
    return await transfer_client(
        prosody, user, "send", tmp_path / f"{user}-id", connect_timeout=AKE_TIMEOUT
    )


async def plain(
    prosody: LocalProsody, user: str, resource: str, *features: str, priority: int = 0
) -> XferClient:
    """A client without xfer that answers service discovery, as every
    client does, announcing ``features``."""
    c = await login(prosody, user, resource)
    c.register_plugin("xep_0030")
    for feature in features:
        c.plugin["xep_0030"].add_feature(feature)
    c.send_presence(ppriority=priority)
    return c


async def timed(
    client: XferClient, peer: str
) -> tuple[BaseException | None, float, str | None]:
    started = time.perf_counter()
    try:
        full, _ = await client.plugin["xfer_transfer"].secure(peer)
    except NotSecure as exc:
        return exc, time.perf_counter() - started, None
    return None, time.perf_counter() - started, full


async def subscribe(one: XferClient, contact: XferClient) -> None:
    """``one`` sees ``contact``'s presence (``contact`` approves, as its
    user would in an ordinary client)."""
    contact.auto_authorize = True
    contact.auto_subscribe = False
    one.send_presence(pto=contact.boundjid.bare, ptype="subscribe")
    for _ in range(200):
        await asyncio.sleep(0.02)
        roster = one.client_roster
        if (
            roster.has_jid(contact.boundjid.bare)
            and roster[contact.boundjid.bare].resources
        ):
            return
    raise AssertionError("the subscription did not go through")


async def test_a_resource_that_is_not_online_is_offline(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    try:
        error, seconds, _ = await timed(alice, f"{them}@{prosody.domain}/laptop")
        assert isinstance(error, PeerOffline), error
        assert "is offline" in str(error)
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()


async def test_an_account_whose_presence_we_do_not_see_gives_no_answer(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    """No presence to go by (no subscription) and no client online: the
    server keeps or drops the query in silence. After the short wait, "no
    answer", saying why xfer cannot tell offline from "no xfer"."""
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    try:
        error, seconds, _ = await timed(alice, f"{them}@{prosody.domain}")
        assert type(error) is NotSecure, error
        assert "no answer" in str(error)
        assert "presence is not shared" in str(error)
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()


async def test_a_contact_that_went_offline_is_offline(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    """Its presence says so: nothing is even sent to it."""
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    contact = await plain(prosody, them, "phone")
    try:
        await subscribe(alice, contact)
        await contact.stop()
        for _ in range(500):  # up to 10 s: the server is busy with others too
            if not alice.client_roster[contact.boundjid.bare].resources:
                break
            await asyncio.sleep(0.02)
        error, seconds, _ = await timed(alice, contact.boundjid.bare)
        assert isinstance(error, PeerOffline), error
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()


@pytest.mark.parametrize(
    ("features", "missing"),
    [
        ((), 3),  # a chat client
        ((NS_JINGLE, NS_FILE_TRANSFER), 1),  # Jingle file transfer, not xfer's
    ],
    ids=["chat-only", "jingle-without-xfer"],
)
async def test_an_online_client_without_xfer_is_named_with_what_it_lacks(
    prosody: LocalProsody, tmp_path: Path, features: tuple[str, ...], missing: int
) -> None:
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    other = await plain(prosody, them, "desktop", *features)
    try:
        error, seconds, _ = await timed(alice, other.boundjid.full)
        assert isinstance(error, PeerIncapable), error
        assert error.lacks == {other.boundjid.full: lacking(features)}
        assert len(lacking(features)) == missing
        assert "urn:xfer:jingle:otr:1" in str(error)
        assert seconds < WELL_BEFORE
        # Seen through its presence, the bare JID says the same.
        await subscribe(alice, other)
        error, seconds, _ = await timed(alice, other.boundjid.bare)
        assert isinstance(error, PeerIncapable), error
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()
        await other.stop()


async def test_an_online_client_that_ignores_otr_gives_no_answer(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    """No presence to go by, and the query is taken and ignored: after the
    short wait, "no answer", not the AKE's thirty seconds."""
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    other = await plain(prosody, them, "desktop")
    try:
        error, seconds, _ = await timed(alice, other.boundjid.bare)
        assert type(error) is NotSecure, error
        assert "no answer" in str(error)
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()
        await other.stop()


async def test_a_bare_jid_goes_to_the_resource_that_runs_xfer(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    """The contact's phone (no xfer) has the higher presence priority, so
    the server would hand a query to the bare JID to it; xfer asks the
    resources and sets OTR up with the one that announces xfer."""
    me, them = fresh(prosody, "me", "them")
    alice = await sender(prosody, me, tmp_path)
    phone = await plain(prosody, them, "phone", priority=10)
    desk = await transfer_client(prosody, them, "desk", tmp_path / "them-id")
    try:
        await subscribe(alice, phone)
        for _ in range(500):  # up to 10 s: the server is busy with others too
            if len(alice.client_roster[phone.boundjid.bare].resources) == 2:
                break
            await asyncio.sleep(0.02)
        introduce(alice, desk)
        error, seconds, full = await timed(alice, phone.boundjid.bare)
        assert error is None
        assert full == desk.boundjid.full
        assert seconds < WELL_BEFORE
    finally:
        await alice.stop()
        await phone.stop()
        await desk.stop()
