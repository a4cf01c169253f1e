"""Self-tests of the hostile server (xfer.testing.hostile) against a real Prosody.

alice connects through the hostile server, bob straight to Prosody. With no
rules a transfer works as usual; then the server drops, injects, holds,
rewrites and forges stanzas, and impersonates bob in OTR with a key of its
own. The stream splitter is also fed a recorded stream at every split point.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp.stanza import Message

from tests.helpers import make_offer
from tests.integration.conftest import bob_direct, introduce, login, through
from xfer.errors import NotSecure
from xfer.otr import events as ev
from xfer.otr.session import MessageState
from xfer.otr.trust import Verification
from xfer.testing.hostile import (
    ForgedOTRPeer,
    HostileServer,
    Stanza,
    StanzaSplitter,
    body,
    matching,
    serialize,
)
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import KINDS, forcing
from xfer.transfer.offer import XFER_USE
from xfer.xmpp.client import XferClient

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

SM = "urn:xmpp:sm:3"
FEATURES = "{http://etherx.jabber.org/streams}features"


def messages_to(client: XferClient) -> asyncio.Queue[tuple[str, str]]:
    """(from, body) of every chat message ``client`` gets that is not OTR."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_message(msg: Message) -> None:
        text = msg["body"]
        if text and not text.startswith("?OTR"):
            queue.put_nowait((msg["from"].full, text))

    client.add_event_handler("message", on_message)
    return queue


# -- the splitter, offline -------------------------------------------------------

SERVER_STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>"
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' id='s2' version='1.0'>"
    b"<stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features> \n "
    b"<message from='b@x/\xc3\xa9' to='a@x/a'><body>&lt;caf\xc3\xa9 'q' &amp; \"d\""
    b"</body><x xmlns='urn:a' k='&gt;'/></message>"
    b"<presence a='/>' b=\"'>\"/> "
    b"<iq type='result' id='1'></iq></stream:stream>"
)
EXPECTED = [
    FEATURES,
    "{urn:ietf:params:xml:ns:xmpp-sasl}success",
    FEATURES,
    "{jabber:client}message",
    "{jabber:client}presence",
    "{jabber:client}iq",
]


def split(pieces: list[bytes]) -> list[Stanza | bytes]:
    splitter = StanzaSplitter(
        restart_after=lambda e: e.tag.endswith("}success")  # SASL success
    )
    out: list[Stanza | bytes] = []
    for piece in pieces:
        out.extend(splitter.feed(piece))
    assert splitter.ended
    return out


def check_split(out: list[Stanza | bytes]) -> None:
    assert b"".join(p.raw if isinstance(p, Stanza) else p for p in out) == (
        SERVER_STREAM
    )
    stanzas = [p for p in out if isinstance(p, Stanza)]
    assert [s.element.tag for s in stanzas] == EXPECTED
    message = stanzas[3].element
    assert message.get("from") == "b@x/\u00e9"
    assert body(message) == "<caf\u00e9 'q' & \"d\""
    assert stanzas[4].raw == b"<presence a='/>' b=\"'>\"/>"
    for s in stanzas:  # each piece is exactly its element's bytes
        wrapped = (
            b"<w xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
            + s.raw
            + b"</w>"
        )
        assert ET.tostring(ET.fromstring(wrapped)[0]) == ET.tostring(s.element)


def test_splitter_at_every_split_point() -> None:
    check_split(split([SERVER_STREAM]))
    check_split(split([SERVER_STREAM[i : i + 1] for i in range(len(SERVER_STREAM))]))
    for cut in range(len(SERVER_STREAM) + 1):
        check_split(split([SERVER_STREAM[:cut], SERVER_STREAM[cut:]]))
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(SERVER_STREAM)), 6))
        bounds = [0, *cuts, len(SERVER_STREAM)]
        check_split(split([SERVER_STREAM[a:b] for a, b in itertools_pairs(bounds)]))


def itertools_pairs(bounds: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(bounds))


def test_serialize_declares_each_namespace() -> None:
    stanza = ET.fromstring(
        "<message xmlns='jabber:client' to='b@x' xml:lang='en'><body>a&amp;b</body>"
        "<jingle xmlns='urn:xmpp:jingle:1' action='x'><content name='&quot;'/>"
        "</jingle></message>"
    )
    raw = serialize(stanza)
    assert raw == (
        b'<message to="b@x" xml:lang="en"><body>a&amp;b</body>'
        b'<jingle xmlns="urn:xmpp:jingle:1" action="x"><content name="&quot;"/>'
        b"</jingle></message>"
    )
    again = ET.fromstring(b"<w xmlns='jabber:client'>" + raw + b"</w>")[0]
    assert ET.tostring(again) == ET.tostring(stanza)


# -- against Prosody -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_transfer_through_the_hostile_server_without_rules(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    kind: str,
) -> None:
    config = forcing(kind)  # IBB: the data itself crosses the hostile server
    alice = await through(hostile, prosody, clients, tmp_path / "alice-id", **config)
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id", **config)
    introduce(alice, bob)
    assert hostile.client_jid == f"alice@{prosody.domain}/a"
    src = tmp_path / "secret.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    got, _ = await asyncio.gather(
        receive(), alice.plugin["xfer_transfer"].send_file(bob.boundjid.full, src)
    )
    assert got.read_bytes() == data
    # alice's OTR traffic to bob crossed the hostile server, and all of it
    # went on as its original bytes.
    sent = hostile.seen("to_server")
    otr = [r for r in sent if matching("message", to=bob.boundjid.full)(r.element)]
    assert otr
    assert all((body(r.element) or "").startswith("?OTR") for r in otr)
    delivered = {r.raw for r in hostile.delivered("to_server")}
    assert all(r.raw in delivered for r in sent)
    if kind == "ibb":
        ibb = "{http://jabber.org/protocol/ibb}data"
        assert sum(r.element.find(ibb) is not None for r in sent) >= 5


async def test_a_side_that_closes_closes_the_other(
    hostile: HostileServer,
    alice: XferClient,
) -> None:
    assert hostile.live == 1
    await alice.stop()
    for _ in range(500):  # up to 10 s
        if hostile.live == 0:
            break
        await asyncio.sleep(0.02)
    assert hostile.live == 0
    with pytest.raises(RuntimeError):
        hostile.inject_to_client("<message><body>nobody</body></message>")


async def test_dropping_bobs_messages_times_alices_otr_out(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
) -> None:
    rule = hostile.drop(matching("message", from_=bob.boundjid.bare), "to_client")
    with pytest.raises(NotSecure):
        await alice.plugin["xfer_otr"].secure(bob.boundjid.full, timeout=3)
    assert rule.matched >= 1  # bob answered; his D-H Key went nowhere
    assert not any(
        matching("message", from_=bob.boundjid.bare)(r.element)
        for r in hostile.delivered("to_client")
    )


async def test_injected_message_from_bob_reaches_alice(
    prosody: LocalProsody,
    hostile: HostileServer,
    alice: XferClient,
) -> None:
    inbox = messages_to(alice)
    bob_full = f"bob@{prosody.domain}/b"
    hostile.inject_to_client(
        f"<message from='{bob_full}' type='chat'><body>forged &amp; sent</body>"
        "</message>"
    )
    assert await asyncio.wait_for(inbox.get(), 5) == (bob_full, "forged & sent")


async def test_hold_release_reorders_and_rewrite_changes_both_ways(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
) -> None:
    to_alice, to_bob = messages_to(alice), messages_to(bob)
    # server -> client: held, then released in reverse order.
    held = hostile.hold(matching("message", from_=bob.boundjid.full), "to_client")
    for text in ("one", "two", "three"):
        bob.send_message(mto=alice.boundjid.full, mbody=text, mtype="chat")
    await held.wait(3)
    assert to_alice.empty()
    assert held.release([2, 1, 0]) == 3
    got = [(await asyncio.wait_for(to_alice.get(), 5))[1] for _ in range(3)]
    assert got == ["three", "two", "one"]
    held.remove()

    # A delayed stanza is overtaken by the next one.
    hostile.delay(matching("message", body_prefix="late"), 0.5, "to_client")
    bob.send_message(mto=alice.boundjid.full, mbody="late", mtype="chat")
    bob.send_message(mto=alice.boundjid.full, mbody="early", mtype="chat")
    got = [(await asyncio.wait_for(to_alice.get(), 5))[1] for _ in range(2)]
    assert got == ["early", "late"]

    # client -> server: Prosody takes the re-serialized stanza.
    def swap(element: ET.Element) -> ET.Element:
        found = element.find("{jabber:client}body")
        assert found is not None
        found.text = "rewritten <by> the server"
        return element

    rule = hostile.rewrite(matching("message", to=bob.boundjid.bare), swap, "to_server")
    alice.send_message(mto=bob.boundjid.full, mbody="original", mtype="chat")
    assert await asyncio.wait_for(to_bob.get(), 5) == (
        alice.boundjid.full,
        "rewritten <by> the server",
    )
    assert rule.matched == 1


async def test_forged_peer_completes_an_ake_as_bob(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
) -> None:
    bob_full = bob.boundjid.full
    forger = ForgedOTRPeer(hostile, bob_full)
    otr = alice.plugin["xfer_otr"]
    peer, session = await otr.secure(bob_full, timeout=10)
    assert peer == bob_full
    assert session.state is MessageState.ENCRYPTED
    assert session.their_fingerprint == forger.fingerprint
    bob_key = bob.plugin["xfer_otr"].account.private_key
    assert session.their_fingerprint != bob_key.public.fingerprint
    assert session.their_tag == forger.instance_tag
    assert session.their_tag != bob.plugin["xfer_otr"].account.our_tag
    gone = await forger.wait_event(ev.GoneSecure)
    assert (
        gone.fingerprint
        == alice.plugin["xfer_otr"].account.private_key.public.fingerprint
    )
    assert bob.plugin["xfer_otr"].account.peers() == set()  # swallowed

    # What alice sends in that session, the forger reads.
    offer = make_offer(size=1234, name="payroll.xlsx")
    # (The session's own TLV 8, sent the way the adapter sends its bodies.)
    key = session.extra_symmetric_key(XFER_USE, offer.encode())
    otr._flush()
    got = await forger.wait_event(ev.SymmetricKeyReceived)
    assert got.use == XFER_USE
    assert forger.offers() == [(offer, key)]

    # And what the forger sends, alice takes as bob's (once she trusts the
    # forger's fingerprint, as a user fooled by a wrong check would).
    otr.trust.trust(bob_full, forger.fingerprint, Verification.MANUAL, now=0)
    replayed = dataclasses.replace(offer, transfer_id=os.urandom(16))
    forged_key = forger.send_offer(replayed)
    claimed = await otr.claim_offer(bob_full, replayed.transfer_id, timeout=5)
    assert claimed is not None
    assert claimed.offer == replayed
    assert claimed.key == forged_key
    assert claimed.fingerprint == forger.fingerprint
    forger.close()


async def test_forged_peer_beside_the_real_one(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
) -> None:
    """Without swallowing, alice's D-H Commit reaches both bob and the
    forger, and both answer it (what alice makes of that is for the attack
    tests)."""
    bob_full = bob.boundjid.full
    forger = ForgedOTRPeer(hostile, bob_full, swallow=False)
    with contextlib.suppress(NotSecure):
        await alice.plugin["xfer_otr"].secure(bob_full, timeout=5)
    assert forger.heard >= 1
    bob_tag = bob.plugin["xfer_otr"].account.our_tag

    def otr_from(tag: int) -> Callable[[ET.Element], bool]:
        from_bob = matching("message", from_=bob_full, body_prefix="?OTR:")
        return lambda e: from_bob(e) and hostile_tag(e) == tag

    # The forger answered at once; bob's answer may still be on its way.
    for tag in (forger.instance_tag, bob_tag):
        await hostile.wait_for(otr_from(tag), "to_client", past=True, delivered=True)
    assert alice.boundjid.full in bob.plugin["xfer_otr"].account.peers()


def hostile_tag(element: ET.Element) -> int:
    """The sender instance tag of an encoded OTR message's body."""
    raw = base64.b64decode((body(element) or "")[5:].rstrip("."))
    return int.from_bytes(raw[3:7], "big")


async def test_forged_peer_answers_alices_query(
    prosody: LocalProsody,
    hostile: HostileServer,
    alice: XferClient,
) -> None:
    bob_full = f"bob@{prosody.domain}/phone"  # not even online
    forger = ForgedOTRPeer(hostile, bob_full)
    peer, session = await alice.plugin["xfer_otr"].secure(
        f"bob@{prosody.domain}", timeout=10
    )
    assert peer == bob_full
    assert session.their_fingerprint == forger.fingerprint
    await forger.secure()
    # alice decrypts what the forger sends as bob's (the adapter raises an
    # event for each message).
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    alice.add_event_handler("xfer_otr_message", heard.put_nowait)
    forger.send_message("hello from the server")
    forger.send_message("again")
    assert await asyncio.wait_for(heard.get(), 5) == (bob_full, "hello from the server")
    assert await asyncio.wait_for(heard.get(), 5) == (bob_full, "again")


async def test_stream_management_is_stripped_unless_kept(
    prosody: LocalProsody,
    hostile: HostileServer,
    alice: XferClient,
    clients: list[XferClient],
) -> None:
    seen = [r.element for r in hostile.seen("to_client") if r.element.tag == FEATURES]
    delivered = [
        r.element for r in hostile.delivered("to_client") if r.element.tag == FEATURES
    ]
    assert any(f.find(f"{{{SM}}}sm") is not None for f in seen)  # Prosody offered it
    assert all(f.find(f"{{{SM}}}sm") is None for f in delivered)
    assert hostile.sm_stripped >= 1
    assert not any(r.element.tag.startswith(f"{{{SM}}}") for r in hostile.seen())
    assert not alice.plugin["xep_0198"].enabled_out

    async with HostileServer("127.0.0.1", prosody.c2s_port, strip_sm=False) as keep:
        carol = await login(prosody, "carol", "c", via=keep)
        clients.append(carol)
        await keep.wait_for(
            lambda e: e.tag == f"{{{SM}}}enabled", "to_client", past=True
        )
        assert keep.sm_stripped == 0
        await carol.stop()


async def test_a_dropped_reachability_answer_stops_the_sender_early(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
) -> None:
    """The server swallows bob's answer to alice's service discovery (the
    check before the OTR set-up, xfer/xmpp/reach.py): alice stops within the
    probe's wait with "did not answer", having sent bob no OTR message; a
    server gains a refusal to send, which it could cause anyway."""
    disco = "{http://jabber.org/protocol/disco#info}query"
    rule = hostile.drop(
        matching("iq", from_=bob.boundjid.full, child=disco), "to_client"
    )
    alice.plugin["xfer_transfer"].config["probe_timeout"] = 1.0
    with pytest.raises(NotSecure, match="did not answer within 1 s"):
        await asyncio.wait_for(
            alice.plugin["xfer_transfer"].secure(bob.boundjid.full), 10
        )
    assert rule.matched == 1
    assert not any(
        matching("message", to=bob.boundjid.bare)(r.element)
        for r in hostile.delivered("to_server")
    )
