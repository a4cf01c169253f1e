"""A hostile peer: a raw slixmpp client sending out-of-spec Jingle and IBB to
a client running the whole xfer stack. Each request gets the error the XEPs
name (or a session-terminate with the right reason), nothing crashes, and a
transfer running at the same time between two other accounts is unaffected.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError
from slixmpp.stanza import Iq
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.integration.conftest import introduce, slixmpp_peer, transfer_client
from xfer.testing.prosody import LocalProsody
from xfer.xmpp.client import XferClient

pytestmark = pytest.mark.integration

J = "urn:xmpp:jingle:1"
FT = "urn:xmpp:jingle:apps:file-transfer:5"
ERRORS = "urn:xmpp:jingle:errors:1"
OK = ("result", None)


def jingle(action: str, sid: str = "hostile-1", inner: str = "") -> ET.Element:
    sid_attr = f" sid='{sid}'" if sid else ""
    return ET.fromstring(
        f"<jingle xmlns='{J}' action='{action}'{sid_attr}>{inner}</jingle>"
    )


def offer(size: str = "1000", transport: str = "") -> str:
    transport = transport or (
        "<transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='t1'"
        " block-size='4096'/>"
    )
    return (
        "<content creator='initiator' name='file' senders='initiator'>"
        f"<description xmlns='{FT}'><file><name>x.xfer</name><size>{size}</size>"
        f"</file></description>{transport}"
        "<encrypted xmlns='urn:xfer:jingle:otr:1'"
        " transfer-id='00112233445566778899aabbccddeeff'/></content>"
    )


class Raw:
    """The attacker's side: send raw IQs, collect the Jingle IQs it gets."""

    def __init__(self, client: XferClient) -> None:
        self.client = client
        self.received: asyncio.Queue[ET.Element] = asyncio.Queue()
        client.register_handler(
            Callback(
                "raw jingle",
                MatchXPath(f"{{jabber:client}}iq/{{{J}}}jingle"),
                self._on_jingle,
            )
        )

    def _on_jingle(self, iq: Iq) -> None:
        if iq["type"] == "set":
            el = iq.xml.find(f"{{{J}}}jingle")
            assert el is not None
            self.received.put_nowait(el)
            iq.reply().send()

    async def send(
        self, to: str, payload: ET.Element, kind: str = "set"
    ) -> tuple[str, str | None]:
        """("result", None) or (stanza condition, Jingle condition)."""
        iq = self.client.make_iq(ito=to, itype=kind)
        iq.xml.append(payload)
        try:
            await iq.send(timeout=10)
        except IqError as exc:
            error = exc.iq.xml.find("{jabber:client}error")
            assert error is not None
            extra = error.find(f"{{{ERRORS}}}*")
            return exc.iq["error"]["condition"], (
                extra.tag.rsplit("}", 1)[1] if extra is not None else None
            )
        return "result", None

    async def terminated(self, sid: str, timeout: float = 20) -> str:
        """The reason of the session-terminate the victim sends for ``sid``."""
        while True:
            el = await asyncio.wait_for(self.received.get(), timeout)
            if el.get("sid") == sid and el.get("action") == "session-terminate":
                reason = el.find(f"{{{J}}}reason")
                assert reason is not None
                return next(
                    c.tag.rsplit("}", 1)[1]
                    for c in reason
                    if not c.tag.endswith("}text")
                )


@pytest.fixture
async def scene(
    prosody: LocalProsody, tmp_path: Path
) -> AsyncIterator[tuple[XferClient, Raw, XferClient]]:
    """alice (xfer, the victim), bob (raw attacker), carol (xfer, a friend)."""
    alice = await transfer_client(
        prosody, "alice", "victim", tmp_path / "alice", otr_offer_wait=1.0
    )
    carol = await transfer_client(prosody, "carol", "friend", tmp_path / "carol")
    introduce(alice, carol)
    bob = await slixmpp_peer(prosody, "attacker")
    yield alice, Raw(bob), carol
    for c in (alice, carol, bob):
        await c.stop()


async def test_out_of_spec_requests_get_the_xep_errors(
    scene: tuple[XferClient, Raw, XferClient],
) -> None:
    alice, bob, _ = scene
    to = alice.boundjid.full
    cases = [
        (jingle("transport-info", "nobody"), ("item-not-found", "unknown-session")),
        (jingle("session-accept", "nobody"), ("item-not-found", "unknown-session")),
        (jingle("session-terminate", ""), ("bad-request", None)),
        (jingle("session-dance"), ("feature-not-implemented", "unsupported-info")),
        (
            jingle("session-initiate", "huge", offer(size=str(2**70))),
            ("bad-request", None),
        ),
        (jingle("session-initiate", "neg", offer(size="-5")), ("bad-request", None)),
    ]
    for payload, expected in cases:
        assert await bob.send(to, payload) == expected, ET.tostring(payload)
    assert await bob.send(to, jingle("session-info"), kind="get") == (
        "bad-request",
        None,
    )
    # IBB data for a stream that does not exist.
    data = ET.fromstring(
        "<data xmlns='http://jabber.org/protocol/ibb' seq='0' sid='closed'>AAAA</data>"
    )
    assert (await bob.send(to, data))[0] == "item-not-found"


async def test_sessions_from_a_hostile_peer_end_with_reasons(
    scene: tuple[XferClient, Raw, XferClient],
) -> None:
    alice, bob, _ = scene
    to = alice.boundjid.full
    # An offer with a transport nobody knows.
    ice = "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>"
    assert (
        await bob.send(to, jingle("session-initiate", "s-ice", offer(transport=ice)))
        == OK
    )
    assert await bob.terminated("s-ice") == "unsupported-transports"
    # An encrypted offer with no OTR offer behind it.
    assert await bob.send(to, jingle("session-initiate", "s-otr", offer())) == OK
    assert await bob.terminated("s-otr") == "security-error"
    # The same sid again while the first is live: refused.
    assert await bob.send(to, jingle("session-initiate", "s-dup", offer())) == (
        "result",
        None,
    )
    assert await bob.send(to, jingle("session-initiate", "s-dup", offer())) == (
        "conflict",
        None,
    )
    assert await bob.terminated("s-dup") == "security-error"
    # Actions out of order: accept from the initiator.
    assert await bob.send(to, jingle("session-initiate", "s-ooo", offer())) == OK
    assert await bob.send(to, jingle("session-accept", "s-ooo")) == (
        "unexpected-request",
        "out-of-order",
    )
    assert await bob.terminated("s-ooo") == "security-error"
    assert alice.plugin["xfer_transfer"]._offers.empty()  # nothing reached the user


async def test_a_transfer_goes_on_while_a_peer_floods(
    scene: tuple[XferClient, Raw, XferClient], tmp_path: Path
) -> None:
    alice, bob, carol = scene
    src = tmp_path / "real.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    flood_took: list[float] = []

    async def flood() -> None:
        started = time.monotonic()
        for i in range(200):
            await bob.send(
                alice.boundjid.full, jingle("session-initiate", f"f{i}", offer())
            )
        flood_took.append(time.monotonic() - started)

    async def receive() -> Path:
        offer_ = await alice.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer_.accept(inbox)

    got, _, _ = await asyncio.gather(
        receive(),
        carol.plugin["xfer_transfer"].send_file(alice.boundjid.full, src),
        flood(),
    )
    assert got.read_bytes() == data
    # Every flooded session was ended, nearly all at once as "busy": one
    # account may have only a few offers going (max_per_peer); none is left.
    reasons: collections.Counter[str] = collections.Counter()
    ended: set[str] = set()
    while len(ended) < 200:
        el = await asyncio.wait_for(bob.received.get(), 20)
        if el.get("action") == "session-terminate" and el.get("sid") not in ended:
            ended.add(str(el.get("sid")))
            reason = el.find(f"{{{J}}}reason")
            assert reason is not None
            reasons[next(c.tag.rsplit("}", 1)[1] for c in reason)] += 1
    # Sessions admitted (at most max_per_peer = 4 at a time) wait
    # otr_offer_wait = 1 s for an OTR offer that never comes, then end as
    # "security-error"; every other one is refused at once as "busy". So the
    # admitted count is bounded by how many 1 s waits the flood lasted.
    admitted_bound = 4 * (math.ceil(flood_took[0] / 1.0) + 1)
    assert set(reasons) <= {"busy", "security-error"}, reasons
    assert reasons["security-error"] <= admitted_bound, (reasons, flood_took)
    assert reasons["busy"] >= 200 - admitted_bound, reasons
    assert set(reasons) <= {"busy", "security-error"}, reasons
    await asyncio.sleep(0.5)
    assert alice.plugin["xfer_xep_0166"].live == 0
