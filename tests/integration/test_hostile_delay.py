"""A hostile server replays bob's real OTR messages to alice, stamped as
delayed (``spec/otr.md`` section 2, "Delayed messages").

alice connects through the hostile server, bob straight to Prosody. The
server keeps copies of bob's AKE messages and his data messages and plays
them back with a delay element (in any of the forms servers use): alice
never restarts or answers a key exchange for them, sends bob nothing in
reply, and the conversation and a transfer go on as before.
"""

from __future__ import annotations

import asyncio
import copy
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import introduce
from xfer.testing.hostile import HostileServer, body, matching
from xfer.xmpp.delay import NS_DELAY, NS_LEGACY_DELAY

if TYPE_CHECKING:
    from xfer.xmpp.client import XferClient

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def stamped(element: ET.Element, form: str) -> ET.Element:
    """A copy of ``element`` with a delay in ``form``."""
    out = copy.deepcopy(element)
    stamp = {"stamp": "2020-01-01T00:00:00Z"}
    if form == "offline":
        ET.SubElement(out, f"{{{NS_DELAY}}}delay", {"from": "xfer.test", **stamp})
    elif form == "both":
        to = (out.get("to") or "").split("/")[0]
        ET.SubElement(out, f"{{{NS_DELAY}}}delay", {"from": to, **stamp})
        ET.SubElement(out, f"{{{NS_DELAY}}}delay", {"from": "xfer.test", **stamp})
    else:
        ET.SubElement(
            out, f"{{{NS_LEGACY_DELAY}}}x", {"from": "xfer.test", "stamp": "20200101"}
        )
    return out


def otr_bodies_from(hostile: HostileServer, sender: str, direction: str) -> list[str]:
    return [
        body(r.element) or ""
        for r in hostile.delivered(direction)  # type: ignore[arg-type]
        if matching("message", from_=sender)(r.element)
        and (body(r.element) or "").startswith("?OTR")
    ]


async def test_replayed_ake_and_data_messages_change_nothing(
    hostile: HostileServer, alice: XferClient, bob: XferClient
) -> None:
    introduce(alice, bob)
    otr = alice.plugin["xfer_otr"]
    # bob starts the key exchange: his D-H Commit, then his Reveal Signature.
    peer, session = await bob.plugin["xfer_otr"].secure(alice.boundjid.full, timeout=10)
    await asyncio.sleep(0.3)
    mine = otr.session(bob.boundjid.full)
    assert mine is not None
    ssid = mine.ssid
    from_bob = [
        r.element
        for r in hostile.seen("to_client")
        if matching("message", from_=bob.boundjid.full)(r.element)
        and (body(r.element) or "").startswith("?OTR:AAM")
    ]
    kinds = {(body(e) or "")[:9] for e in from_bob}
    assert {"?OTR:AAMC", "?OTR:AAMR"} <= kinds  # D-H Commit, Reveal Signature
    # And one data message of this very conversation, then a stale copy.
    session.send("hello alice")
    bob.plugin["xfer_otr"]._flush()
    data = await hostile.wait_for(
        matching("message", from_=bob.boundjid.full, body_prefix="?OTR:AAMD"),
        "to_client",
        past=True,
    )
    await asyncio.sleep(0.3)
    sent_before = len(hostile.seen("to_server"))

    for form in ("offline", "both", "legacy"):
        for element in [*from_bob, data.element]:
            hostile.inject_to_client(stamped(element, form))
    hostile.inject_to_client(
        stamped(
            ET.fromstring(
                f"<message xmlns='jabber:client' from='{bob.boundjid.full}' "
                f"to='{alice.boundjid.full}' type='chat'><body>?OTRv3?</body>"
                "</message>"
            ),
            "both",
        )
    )
    await asyncio.sleep(1.0)

    # No answer of any kind to bob, no new key exchange, the same session.
    replies = [
        r.element
        for r in hostile.seen("to_server")[sent_before:]
        if matching("message", to=bob.boundjid.bare)(r.element)
    ]
    assert replies == []
    assert otr.session(bob.boundjid.full) is mine
    assert mine.ssid == ssid
    assert not otr._set_up.ake_under_way(bob.boundjid.full)
    assert peer == alice.boundjid.full

    # The conversation still works both ways.
    got: asyncio.Queue[str] = asyncio.Queue()
    alice.add_event_handler("xfer_otr_message", lambda pair: got.put_nowait(pair[1]))
    session.send("still here")
    bob.plugin["xfer_otr"]._flush()
    assert await asyncio.wait_for(got.get(), 5) == "still here"
