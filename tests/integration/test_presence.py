"""xfer keeps quiet about the user's presence and leaves the roster alone:
a subscription request is neither answered nor returned (slixmpp's defaults
would authorize every request and subscribe back)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from slixmpp import Presence

from tests.integration.conftest import login
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.integration


async def test_a_subscription_request_is_neither_answered_nor_returned(
    prosody: LocalProsody,
) -> None:
    # Fresh accounts: the server (and its rosters) live for the whole session.
    user, stranger = f"quiet{secrets.token_hex(3)}", f"curious{secrets.token_hex(3)}"
    prosody.add_accounts({user: "pw-user", stranger: "pw-stranger"})
    ours = await login(prosody, user, "xfer")
    theirs = await login(prosody, stranger, "spy")
    try:
        answers: list[str] = []
        requests: list[str] = []

        def seen(presence: Presence) -> None:
            if presence["type"] in {"subscribed", "unsubscribed", "subscribe"}:
                answers.append(presence["type"])

        theirs.add_event_handler("presence", seen)
        ours.add_event_handler(
            "roster_subscription_request", lambda p: requests.append(p["type"])
        )
        theirs.send_presence(pto=f"{user}@{prosody.domain}", ptype="subscribe")
        for _ in range(500):  # the request reaches our client (10 s at most)...
            if requests:
                break
            await asyncio.sleep(0.02)
        assert requests == ["subscribe"]
        await asyncio.sleep(1.0)  # ...which answers nothing, in time
        assert answers == []
        roster = await ours.get_roster()
        items = roster["roster"]["items"]
        stranger_jid = f"{stranger}@{prosody.domain}"
        # The server keeps the request pending for the user's own client to
        # decide; xfer neither approved it nor asked back.
        assert all(
            items[j]["subscription"] in {"none"} and not items[j]["approved"]
            for j in items
            if str(j) == stranger_jid
        )
    finally:
        ours.abort()
        theirs.abort()
