"""Attacks on xfer by the servers and by other XMPP users (issue: the server
is the adversary). Each test stages one attack against real clients on a real
Prosody; the hostile server is :mod:`xfer.testing.hostile`, a stanza-level
man in the middle between one client and Prosody.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.helpers import make_offer
from tests.integration.conftest import bob_direct, introduce, through, transfer_client
from xfer.errors import (
    RemoteProtocolError,
    TransferRejected,
    TransferTimeout,
    XferError,
)
from xfer.jingle.wire import NS_ENCRYPTED
from xfer.otr.messages import WHITESPACE_BASE, WHITESPACE_V2, WHITESPACE_V3
from xfer.testing.hostile import (
    Direction,
    ForgedOTRPeer,
    HostileServer,
    body,
    chat_message,
    serialize,
)
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing
from xfer.transfer.offer import (
    XFER_USE,
    TransferDigest,
    TransferOffer,
    TransferVerdict,
)
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import RESTARTED
from xfer.xmpp.versions import MAX_REPLIES, reply_text

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

#: bob keeps an offer 2 s for its Jingle session (the server delays it).
PATIENT_BOB = pytest.mark.parametrize(
    "bob", [{"otr_offer_wait": 2.0}], indirect=True, ids=["patient-bob"]
)


def _offer(rng: int) -> TransferOffer:
    return make_offer(size=1000 + rng, name=f"junk-{rng}")


async def _throwaways(
    prosody: LocalProsody, tmp_path: Path, count: int, clients: list[XferClient]
) -> list[XferClient]:
    users = {f"junk{i}": f"junk{i}-password" for i in range(count)}
    prosody.add_accounts(users)
    made = await asyncio.gather(
        *(
            transfer_client(prosody, user, "x", tmp_path / f"{user}-id")
            for user in users
        )
    )
    clients += made
    return list(made)


async def _receive_trusted(bob: XferClient, into: Path, timeout: float) -> Path:
    """Take bob's offers in order, declining untrusted ones, and accept the
    first trusted one into ``into``."""
    plugin = bob.plugin["xfer_transfer"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        offer = await plugin.next_offer(timeout=deadline - loop.time())
        if offer.trusted:
            return await offer.accept(into)
        await offer.decline()


async def _send_real_file(alice: XferClient, bob: XferClient, tmp_path: Path) -> None:
    source = tmp_path / "real.bin"
    data = os.urandom(200_000)
    source.write_bytes(data)
    into = tmp_path / "in"
    into.mkdir()
    sending = asyncio.ensure_future(
        alice.plugin["xfer_transfer"].send_file(bob.boundjid.full, source)
    )
    plugin = bob.plugin["xfer_transfer"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    # Nobody answers until alice's offer was vetted (queued, or refused).
    while not sending.done() and not any(o.trusted for o in plugin._queued()):
        assert loop.time() < deadline, "alice's offer was never vetted"
        await asyncio.sleep(0.05)
    try:
        got = await _receive_trusted(bob, into, 30)
        result = await asyncio.wait_for(sending, 30)
    finally:
        sending.cancel()
    assert result.size == len(data)
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("accept_untrusted", [False, True])
async def test_untrusted_offers_cannot_fill_the_otr_offer_table(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    accept_untrusted: bool,
) -> None:
    """Eight throw-away accounts finish an AKE with bob and each send the
    most offers one account may have waiting in OTR (8: 64 in all, the whole
    table before the fix); a trusted offer from alice still goes through."""
    alice = await transfer_client(prosody, "alice", "a", tmp_path / "alice-id")
    bob = await transfer_client(
        prosody, "bob", "b", tmp_path / "bob-id", accept_untrusted=accept_untrusted
    )
    clients += [alice, bob]
    assert bob.plugin["xfer_transfer"].identity is not None
    introduce(alice, bob)
    junk = await _throwaways(prosody, tmp_path, 8, clients)
    for c in junk:
        otr = c.plugin["xfer_otr"]
        _, session = await otr.secure(bob.boundjid.full, timeout=20)
        for i in range(8):
            otr.send_offer(session, _offer(i), fingerprint=session.their_fingerprint)
    otr = bob.plugin["xfer_otr"]
    await asyncio.sleep(0.5)  # let them arrive
    kept = [o for o in otr._offers.unclaimed.values() if not o.trusted]
    assert len(kept) == (otr.config["untrusted_offers"] if accept_untrusted else 0)
    await _send_real_file(alice, bob, tmp_path)


async def test_untrusted_senders_cannot_fill_the_offer_queue(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """bob takes files from untrusted peers too (accept_untrusted): eight
    throw-away accounts offer two files each (16, the whole queue before
    the fix) and nobody answers; alice's trusted offer still gets in."""
    alice = await transfer_client(prosody, "alice", "a", tmp_path / "alice-id")
    bob = await transfer_client(
        prosody, "bob", "b", tmp_path / "bob-id", accept_untrusted=True
    )
    clients += [alice, bob]
    introduce(alice, bob)
    junk = await _throwaways(prosody, tmp_path, 8, clients)
    for c in junk:
        c.plugin["xfer_transfer"].config["accept_untrusted"] = True
    path = tmp_path / "junk.bin"
    path.write_bytes(os.urandom(1000))
    offers = [
        asyncio.ensure_future(
            c.plugin["xfer_transfer"].send_file(bob.boundjid.full, path)
        )
        for c in junk
        for _ in range(2)
    ]
    plugin = bob.plugin["xfer_transfer"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while sum(f.done() for f in offers) + plugin._offers.qsize() < len(offers):
        assert loop.time() < deadline, "the junk offers were never answered"
        await asyncio.sleep(0.1)
    assert plugin._offers.qsize() == plugin.config["max_untrusted_offers"]
    try:
        await _send_real_file(alice, bob, tmp_path)
    finally:
        for f in offers:
            f.cancel()
        await asyncio.gather(*offers, return_exceptions=True)


# -- the hostile server: forged AKEs under bob's full JID -------------------------

NS_JINGLE = "urn:xmpp:jingle:1"
NS_IBB = "http://jabber.org/protocol/ibb"
SIGNATURE, DH_KEY = 0x12, 0x0A


def otr_type(element: ET.Element) -> int | None:
    """The message type of an encoded OTR body (None for anything else)."""
    text = body(element) or ""
    if not text.startswith("?OTR:"):
        return None
    raw = base64.b64decode(text[5:].rstrip(".")[:16] + "==")
    return raw[2] if len(raw) > 2 else None


class BackToBack:
    """The forger's AKE messages are held and delivered right behind bob's
    answers of the same type (D-H Key, then Signature): alice reads both in
    one go, bob's first, as a server that times its forgeries would."""

    def __init__(self, server: HostileServer, forger: ForgedOTRPeer, bob: str) -> None:
        self.server = server
        self.forger = forger
        self.bob = bob
        self.buffered: dict[int, list[ET.Element]] = {}
        self.paired = 0
        forger._flush = self._buffer  # type: ignore[method-assign]
        self.rule = server.on_stanza(self._behind_bob, "to_client")

    def _buffer(self) -> None:
        for peer, text in self.forger.account.data_to_send():
            element = chat_message(self.forger.impersonate, peer, text)
            kind = otr_type(element)
            if kind in (DH_KEY, SIGNATURE):
                self.buffered.setdefault(kind, []).append(element)
            else:
                self.server.inject_to_client(element)

    def _behind_bob(self, _d: str, element: ET.Element) -> list[ET.Element] | None:
        if element.get("from") != self.bob:
            return None
        kind = otr_type(element)
        if kind not in (DH_KEY, SIGNATURE) or not self.buffered.get(kind):
            return None
        self.paired += 1
        return [element, *self.buffered.pop(kind)]


async def _sent_and_received(
    alice: XferClient, bob: XferClient, tmp_path: Path, size: int = 300_000
) -> tuple[BaseException | None, Path | None]:
    """alice sends a file to bob's full JID; bob accepts what is offered.
    Returns alice's error (None: she reported success) and bob's file."""
    source = tmp_path / f"secret-{size}.bin"
    source.write_bytes(os.urandom(size))
    into = tmp_path / "in"
    into.mkdir(exist_ok=True)

    async def receive() -> Path | None:
        try:
            offer = await bob.plugin["xfer_transfer"].next_offer(timeout=25)
            return await offer.accept(into)
        except XferError:
            return None

    receiving = asyncio.ensure_future(receive())
    try:
        await asyncio.wait_for(
            alice.plugin["xfer_transfer"].send_file(bob.boundjid.full, source), 40
        )
        error: BaseException | None = None
    except XferError as exc:
        error = exc
    got = await asyncio.wait_for(receiving, 40)
    if got is not None:
        assert got.read_bytes() == source.read_bytes()
    if error is None:
        assert got is not None, "alice reported success, bob has no file"
    return error, got


def _no_key_to_the_forger(alice: XferClient, forger: ForgedOTRPeer) -> None:
    """The invariant: nothing alice encrypted with the transfer's key material
    reached the forger's session."""
    assert forger.offers() == []
    assert forger.symmetric_keys() == []
    for _, session in alice.plugin["xfer_otr"].account.secure_sessions():
        if session.their_fingerprint == forger.fingerprint:
            assert session.their_tag == forger.instance_tag


@pytest.mark.parametrize("how", ["fresh", "forged-unavailable"])
async def test_a_forged_ake_answer_back_to_back_gets_no_offer(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
    tmp_path: Path,
    how: str,
) -> None:
    """alice's server answers her D-H Commit to bob a second time, as bob's
    full JID with its own instance tag and key, each step delivered right
    behind bob's. Before the fix the trust check saw bob's session and the
    offer (and the file's key) went to the server's. With ``forged-unavailable``
    the server first makes alice forget a working session with bob."""
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    if how == "forged-unavailable":
        error, got = await _sent_and_received(alice, bob, tmp_path, 1000)
        assert error is None
        assert got is not None
        hostile.inject_to_client(f"<presence type='unavailable' from='{bob_full}'/>")
        # alice forgets the session when she reads it (waited for: up to 10 s).
        otr_account = alice.plugin["xfer_otr"].account
        for _ in range(200):
            if not otr_account.sessions(bob_full):
                break
            await asyncio.sleep(0.05)
        assert otr_account.sessions(bob_full) == []
    forger = ForgedOTRPeer(hostile, bob_full, swallow=False)
    timing = BackToBack(hostile, forger, bob_full)
    error, got = await _sent_and_received(alice, bob, tmp_path)
    _no_key_to_the_forger(alice, forger)
    assert timing.paired >= 1  # the forged answer was delivered behind bob's
    # The server may deny service (alice then names an untrusted key), but
    # here bob's answer came first, and the transfer went through.
    assert error is None, error
    assert got is not None


async def test_a_forged_restart_makes_alice_renew_with_bob_not_the_forger(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
    tmp_path: Path,
) -> None:
    """The server drops alice's offer and answers it in bob's name with the
    text that says bob restarted; alice must renew OTR (a new AKE: no stale
    commit of hers left open for the server to answer) and offer again."""
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    await alice.plugin["xfer_otr"].secure(bob_full, timeout=10)
    first_ssid = alice.plugin["xfer_otr"].session(bob_full).ssid

    def forge_restart(_d: str, element: ET.Element) -> list[ET.Element] | None:
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is None or jingle.get("action") != "session-initiate":
            return None
        rule.remove()
        sid = jingle.get("sid")
        ack = ET.fromstring(
            f"<iq xmlns='jabber:client' type='result' id='{element.get('id')}' "
            f"from='{bob_full}' to='{element.get('from') or alice.boundjid.full}'/>"
        )
        terminate = ET.fromstring(
            f"<iq xmlns='jabber:client' type='set' id='forged1' from='{bob_full}' "
            f"to='{alice.boundjid.full}'><jingle xmlns='{NS_JINGLE}' "
            f"action='session-terminate' sid='{sid}'><reason><security-error/>"
            f"<text>no matching offer inside OTR; {RESTARTED}</text></reason>"
            "</jingle></iq>"
        )
        loop = asyncio.get_running_loop()
        loop.call_soon(hostile.inject_to_client, ack)
        loop.call_later(0.05, hostile.inject_to_client, terminate)
        return []

    rule = hostile.on_stanza(forge_restart, "to_server")
    # It also answers alice's new AKE in bob's name, right behind bob.
    forger = ForgedOTRPeer(hostile, bob_full, swallow=False)
    BackToBack(hostile, forger, bob_full)
    error, got = await _sent_and_received(alice, bob, tmp_path)
    _no_key_to_the_forger(alice, forger)
    assert error is None, error
    assert got is not None
    assert alice.plugin["xfer_otr"].session(bob_full).ssid != first_ssid


# -- the hostile server: the receiver's verdict ------------------------------------


async def test_a_forged_success_is_not_believed(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """Over IBB the server alters one data block: bob refuses the file. The
    server drops bob's refusal (Jingle, and everything bob says in OTR) and
    tells alice ``success`` in bob's name after her last byte. Before the
    fix alice reported the file delivered."""
    config = forcing("ibb")
    alice = await through(hostile, prosody, clients, tmp_path / "alice-id", **config)
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id", **config)
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    await alice.plugin["xfer_otr"].secure(bob_full, timeout=10)
    state: dict[str, str] = {}

    def corrupt(_d: str, element: ET.Element) -> list[ET.Element] | None:
        data = element.find(f"{{{NS_IBB}}}data")
        if data is None or state.get("corrupted") or not data.text:
            return None
        state["corrupted"] = "yes"
        raw = bytearray(base64.b64decode(data.text))
        raw[len(raw) // 2] ^= 0x40
        data.text = base64.b64encode(bytes(raw)).decode()
        return [element]

    def silence_bob(_d: str, element: ET.Element) -> list[ET.Element] | None:
        if element.get("from") != bob_full:
            return None
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if (body(element) or "").startswith("?OTR") and "corrupted" in state:
            return []  # bob's verdict (and whatever else bob says in OTR)
        if jingle is not None and jingle.get("action") == "session-terminate":
            sid = jingle.get("sid")
            forged = ET.fromstring(
                f"<iq xmlns='jabber:client' type='set' id='forged2' "
                f"from='{bob_full}' to='{alice.boundjid.full}'>"
                f"<jingle xmlns='{NS_JINGLE}' action='session-terminate' "
                f"sid='{sid}'><reason><success/></reason></jingle></iq>"
            )
            return [forged]
        return None

    hostile.on_stanza(corrupt, "to_server")
    hostile.on_stanza(silence_bob, "to_client")
    alice.plugin["xfer_transfer"].config["resume_attempts"] = 0
    error, got = await _sent_and_received(alice, bob, tmp_path, 200_000)
    assert state.get("corrupted")
    assert got is None  # bob stored nothing
    assert isinstance(error, RemoteProtocolError), error
    assert "not believed" in str(error)


async def test_a_verdict_from_another_key_is_ignored(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
    tmp_path: Path,
) -> None:
    """The server holds an OTR session with alice in bob's name (its own key,
    another instance tag) and, seeing the transfer id in Jingle, sends her a
    verdict that refuses the file, and one that claims it stored. Neither
    counts: the transfer to the real bob goes through."""
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    await alice.plugin["xfer_otr"].secure(bob_full, timeout=10)
    forger = ForgedOTRPeer(hostile, bob_full, swallow=False)
    forger.start_ake()
    await forger.secure()

    def forge_verdicts(_d: str, element: ET.Element) -> None:
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is None or jingle.get("action") != "session-accept":
            return None
        tid = jingle.find(f".//{{{NS_ENCRYPTED}}}encrypted")
        assert tid is not None
        transfer_id = bytes.fromhex(tid.get("transfer-id") or "")
        for stored in (False, True):
            verdict = TransferVerdict(
                transfer_id=transfer_id,
                stored=stored,
                reason="" if stored else "the data did not verify",
            )
            forger.send_symmetric_key(XFER_USE, verdict.encode())
        return None

    hostile.on_stanza(forge_verdicts, "to_client")
    error, got = await _sent_and_received(alice, bob, tmp_path)
    assert error is None, error
    assert got is not None
    assert forger.offers() == []


# -- the hostile server: the sender's digest --------------------------------------


async def test_a_dropped_digest_only_makes_the_transfer_fail(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server drops what alice says in OTR once bob accepted: her digest
    of the file, which follows the sealed stream. bob verified every chunk
    but cannot check the whole file against her SHA-256: after his connect
    timeout he refuses it (his verdict reaches alice) and stores nothing."""
    alice = await through(hostile, prosody, clients, tmp_path / "alice-id")
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id", connect_timeout=2.0)
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    await alice.plugin["xfer_otr"].secure(bob_full, timeout=10)
    state: dict[str, int] = {"accepted": 0, "dropped": 0}

    def accepted(_d: str, element: ET.Element) -> None:
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is not None and jingle.get("action") == "session-accept":
            state["accepted"] += 1

    def drop_digest(_d: str, element: ET.Element) -> list[ET.Element] | None:
        if (
            state["accepted"]
            and element.get("to") == bob_full
            and otr_type(element) == 0x03
        ):
            state["dropped"] += 1
            return []
        return None

    hostile.on_stanza(accepted, "to_client")
    hostile.on_stanza(drop_digest, "to_server")
    alice.plugin["xfer_transfer"].config["resume_attempts"] = 0
    error, got = await _sent_and_received(alice, bob, tmp_path)
    assert state["dropped"]
    assert got is None
    assert list((tmp_path / "in").iterdir()) == []  # no part file either
    assert isinstance(error, TransferRejected), error
    assert "refused the file" in str(error)


async def test_a_digest_from_another_key_is_ignored(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Now bob, the receiver, is behind the server, which holds an OTR
    session with him in alice's name (its own key, another instance tag).
    When bob accepts, it sends him a digest for that transfer (of other
    data, at the right size). It does not count: bob waits for alice's,
    and stores the file."""
    bob = await transfer_client(prosody, "bob", "b", tmp_path / "bob-id", via=hostile)
    alice = await transfer_client(prosody, "alice", "a", tmp_path / "alice-id")
    clients += [bob, alice]
    introduce(alice, bob)
    alice_full = alice.boundjid.full
    await alice.plugin["xfer_otr"].secure(bob.boundjid.full, timeout=10)
    forger = ForgedOTRPeer(hostile, alice_full, swallow=False)
    forger.start_ake()
    await forger.secure()
    forged: list[TransferDigest] = []

    def forge_digest(_d: str, element: ET.Element) -> None:
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is None or jingle.get("action") != "session-accept":
            return None
        tid = jingle.find(f".//{{{NS_ENCRYPTED}}}encrypted")
        assert tid is not None
        digest = TransferDigest(
            transfer_id=bytes.fromhex(tid.get("transfer-id") or ""),
            sha256=hashlib.sha256(b"other data").digest(),
            size=300_000,
        )
        forger.send_symmetric_key(XFER_USE, digest.encode())
        forged.append(digest)
        return None

    hostile.on_stanza(forge_digest, "to_server")
    with caplog.at_level("WARNING", logger="xfer.xmpp.offers"):
        error, got = await _sent_and_received(alice, bob, tmp_path)
    assert forged
    assert error is None, error
    assert got is not None
    assert "ignoring a digest" in caplog.text  # it came, and did not count


# -- replay and reflection ---------------------------------------------------------


def _offer_message(server: HostileServer, bob_full: str) -> ET.Element:
    """The last OTR data message alice sent bob before her session-initiate:
    the one with the TLV 8 offer."""
    last = None
    for record in server.seen("to_server"):
        element = record.element
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is not None and jingle.get("action") == "session-initiate":
            assert last is not None
            return last
        if element.get("to") == bob_full and otr_type(element) == 0x03:
            last = element
    raise AssertionError("no offer seen")


async def _after_a_transfer(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    size: int,
    **alice_config: object,
) -> tuple[XferClient, XferClient]:
    """alice (through ``hostile``) and bob (straight to Prosody), trusting
    each other, once alice has sent bob a file of ``size`` bytes."""
    alice = await through(
        hostile, prosody, clients, tmp_path / "alice-id", **alice_config
    )
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id")
    introduce(alice, bob)
    error, _ = await _sent_and_received(alice, bob, tmp_path, size)
    assert error is None
    return alice, bob


def _initiate(server: HostileServer) -> ET.Element:
    for record in server.seen("to_server"):
        jingle = record.element.find(f"{{{NS_JINGLE}}}jingle")
        if jingle is not None and jingle.get("action") == "session-initiate":
            return record.element
    raise AssertionError("no session-initiate seen")


async def _refused(
    server: HostileServer,
    direction: Direction,
    match: Callable[[ET.Element, ET.Element], bool] = lambda _e, _j: True,
) -> None:
    """Wait for a session-terminate to pass ``server`` in ``direction`` (one
    for which ``match(stanza, jingle)`` holds); its reason: security-error."""
    refused = await server.wait_for(
        lambda e: (
            (j := e.find(f"{{{NS_JINGLE}}}jingle")) is not None
            and j.get("action") == "session-terminate"
            and match(e, j)
        ),
        direction,
        timeout=10,
    )
    assert refused.element.find(f".//{{{NS_JINGLE}}}security-error") is not None


@PATIENT_BOB
async def test_a_replayed_offer_is_refused(
    hostile: HostileServer, alice: XferClient, bob: XferClient, tmp_path: Path
) -> None:
    """After a transfer, the server sends bob alice's OTR offer message and
    her session-initiate again (a new sid): OTR's counters refuse the old
    message, the transfer id was claimed once, and bob is offered nothing."""
    introduce(alice, bob)
    error, got = await _sent_and_received(alice, bob, tmp_path, 5000)
    assert error is None
    assert got is not None
    bob_full = bob.boundjid.full
    offer = copy.deepcopy(_offer_message(hostile, bob_full))
    initiate = copy.deepcopy(_initiate(hostile))
    initiate.set("id", "replayed1")
    jingle = initiate.find(f"{{{NS_JINGLE}}}jingle")
    assert jingle is not None
    jingle.set("sid", "replayed-sid")
    for element in (offer, initiate):
        element.attrib.pop("from", None)
        hostile.inject_to_server(element)
    await _refused(
        hostile,
        "to_client",
        lambda e, j: e.get("from") == bob_full and j.get("sid") == "replayed-sid",
    )
    with pytest.raises(TransferTimeout):
        await bob.plugin["xfer_transfer"].next_offer(timeout=1)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [got.name]


async def test_an_offer_reflected_to_its_sender_is_refused(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server returns alice's own OTR offer and session-initiate to her,
    as if bob had sent them: OTR's keys are one-way, so alice cannot read
    her own offer, refuses the session, and is offered nothing."""
    alice, bob = await _after_a_transfer(
        prosody, hostile, clients, tmp_path, 5000, otr_offer_wait=2.0
    )
    bob_full = bob.boundjid.full
    for element in (
        copy.deepcopy(_offer_message(hostile, bob_full)),
        copy.deepcopy(_initiate(hostile)),
    ):
        element.set("from", bob_full)
        element.set("to", alice.boundjid.full)
        hostile.inject_to_client(element)
    await _refused(hostile, "to_server")
    with pytest.raises(TransferTimeout):
        await alice.plugin["xfer_transfer"].next_offer(timeout=1)


async def test_forged_old_otr_offers_cost_a_few_replies_and_no_session(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """After a transfer, alice's server forges in bob's name every way a
    client offers OTR version 2 only (queries, a whitespace tag, a version 2
    D-H Commit), and a version 3 whitespace tag; then the same version 2
    query from many made-up accounts. alice's private conversation with bob
    is untouched (nothing goes to bob, no new AKE, the same keys, the next
    transfer goes through it), and the made-up accounts get a few plain
    replies in all."""
    alice, bob = await _after_a_transfer(prosody, hostile, clients, tmp_path, 1000)
    bob_full, alice_full = bob.boundjid.full, alice.boundjid.full
    otr = alice.plugin["xfer_otr"]
    found = otr.secured(bob_full)
    assert found is not None
    session, ssid = found[1], found[1].ssid
    v2_commit = "?OTR:" + base64.b64encode(b"\x00\x02\x02" + bytes(40)).decode() + "."
    base = WHITESPACE_BASE
    before = len(hostile.seen("to_server"))
    for text in (
        "?OTRv2?",
        "?OTR?v2?",
        "hello" + base + WHITESPACE_V2,
        "hello" + base + WHITESPACE_V2 + WHITESPACE_V3,
        v2_commit,
    ):
        hostile.inject_to_client(chat_message(bob_full, alice_full, text, otr=False))
    strangers = [f"stranger{n}@{prosody.domain}/x" for n in range(3 * MAX_REPLIES)]
    for stranger in strangers:
        hostile.inject_to_client(
            chat_message(stranger, alice_full, "?OTRv2?", otr=False)
        )
    # alice reads her stream in order and sends in order: once she answered
    # a request sent after the forgeries, every reply to them has gone out
    # (waited for, not assumed to take under a second).
    hostile.inject_to_client(
        f'<iq type="get" id="after-the-forgeries" from="{strangers[-1]}" '
        f'to="{alice_full}"><ping xmlns="urn:xmpp:ping"/></iq>'
    )
    await hostile.wait_for(
        lambda e: e.get("id") == "after-the-forgeries", "to_server", past=True
    )
    said = [
        (r.element.get("to"), body(r.element))
        for r in hostile.seen("to_server")[before:]
        if body(r.element) is not None
    ]
    assert [to for to, _ in said if to == bob_full] == []
    assert len(said) == MAX_REPLIES
    assert all(to in strangers and text == reply_text({2}) for to, text in said)
    assert otr.secured(bob_full) == (bob_full, session)
    assert session.ssid == ssid
    error, got = await _sent_and_received(alice, bob, tmp_path, 2000)
    assert error is None
    assert got is not None
    assert session.ssid == ssid


# -- strangers' sessions ------------------------------------------------------------


def _initiate_to(
    template: ET.Element, sender: str, recipient: str, sid: str
) -> ET.Element:
    """A copy of a recorded session-initiate, from ``sender`` to ``recipient``."""
    forged = copy.deepcopy(template)
    forged.set("from", sender)
    forged.set("to", recipient)
    forged.set("id", f"forged-{sid}")
    jingle = forged.find(f"{{{NS_JINGLE}}}jingle")
    assert jingle is not None
    jingle.set("sid", sid)
    jingle.set("initiator", sender)
    return forged


async def test_a_strangers_offer_learns_nothing_of_our_presence(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """A session-initiate from someone alice never dealt with is refused
    without telling them that she is online (no directed presence): before
    the fix, any JID that sent one got alice's presence at once."""
    # A real offer from alice gives a well-formed session-initiate to copy.
    alice, _ = await _after_a_transfer(
        prosody, hostile, clients, tmp_path, 1000, otr_offer_wait=1.0
    )
    stranger = f"mallory@{prosody.domain}/x"
    hostile.inject_to_client(
        _initiate_to(_initiate(hostile), stranger, alice.boundjid.full, "stranger1")
    )
    await _refused(hostile, "to_server", lambda e, _j: e.get("to") == stranger)
    presences = [
        r.element
        for r in hostile.seen("to_server")
        if r.element.tag == "{jabber:client}presence"
        and (r.element.get("to") or "").startswith("mallory@")
    ]
    assert presences == []


@PATIENT_BOB
async def test_a_session_naming_another_peers_offer_is_refused(
    prosody: LocalProsody,
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """While alice's offer to bob waits in bob's OTR table (the server holds
    her session-initiate back), carol sends bob a session-initiate naming
    that offer's transfer id. bob refuses it (an offer is claimed only by
    the full JID that sent it in OTR); alice's own session then goes through."""
    carol = await transfer_client(prosody, "carol", "c", tmp_path / "carol-id")
    clients.append(carol)
    introduce(alice, bob)
    introduce(carol, bob)
    held = hostile.hold(
        lambda e: (
            (j := e.find(f"{{{NS_JINGLE}}}jingle")) is not None
            and j.get("action") == "session-initiate"
        ),
        "to_server",
    )
    result = asyncio.ensure_future(_sent_and_received(alice, bob, tmp_path, 20_000))
    await held.wait(1)
    template = held.held[0]
    stolen = _initiate_to(template, carol.boundjid.full, bob.boundjid.full, "stolen")
    stolen.attrib.pop("from")
    carol_refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_terminate(iq: object) -> None:
        el = iq.xml  # type: ignore[attr-defined]
        jingle = el.find(f"{{{NS_JINGLE}}}jingle")
        if (
            jingle is not None
            and jingle.get("sid") == "stolen"
            and jingle.get("action") == "session-terminate"
            and not carol_refused.done()
        ):
            reason = jingle.find(f"{{{NS_JINGLE}}}reason")
            assert reason is not None
            carol_refused.set_result(ET.tostring(reason, encoding="unicode"))

    carol.register_handler(
        Callback(
            "stolen-terminate",
            MatchXPath(f"{{jabber:client}}iq/{{{NS_JINGLE}}}jingle"),
            on_terminate,
        )
    )
    carol.send_raw(serialize(stolen).decode())
    reason = await asyncio.wait_for(carol_refused, 15)
    assert "security-error" in reason
    held.release()
    error, got = await result
    assert error is None, error
    assert got is not None


NS_S5B = "urn:xmpp:jingle:transports:s5b:1"


async def test_forged_candidate_reports_leave_a_working_transfer_working(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """As bob's session-accept reaches alice, the server slips in, in bob's
    name, ``candidate-used`` reports for another transport: one naming a
    candidate alice never offered (taken for bob's report, it would end the
    session), then one naming alice's own candidate (it could cut her tries
    of bob's candidates short, XEP-0260). Neither is bob's report: the file
    goes through, intact."""
    alice = await through(hostile, prosody, clients, tmp_path / "alice-id")
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id")
    introduce(alice, bob)
    bob_full = bob.boundjid.full
    forged: list[str] = []

    def alices_cids() -> list[str]:
        for record in hostile.seen("to_server"):
            jingle = record.element.find(f"{{{NS_JINGLE}}}jingle")
            if jingle is not None and jingle.get("action") == "session-initiate":
                found = jingle.findall(f".//{{{NS_S5B}}}candidate")
                return [str(c.get("cid")) for c in found]
        return []

    def slip_in(_d: str, element: ET.Element) -> list[ET.Element] | None:
        jingle = element.find(f"{{{NS_JINGLE}}}jingle")
        if element.get("from") != bob_full or jingle is None or forged:
            return None
        if jingle.get("action") != "session-accept":
            return None
        [mine, *_] = alices_cids()
        reports = []
        for i, cid in enumerate(("never-offered", mine)):
            forged.append(cid)
            reports.append(
                ET.fromstring(
                    f"<iq xmlns='jabber:client' type='set' id='forged-report{i}'"
                    f" from='{bob_full}' to='{alice.boundjid.full}'>"
                    f"<jingle xmlns='{NS_JINGLE}' action='transport-info'"
                    f" sid='{jingle.get('sid')}'><content creator='initiator'"
                    f" name='file' senders='initiator'><transport"
                    f" xmlns='{NS_S5B}' sid='another-transport'>"
                    f"<candidate-used cid='{cid}'/></transport></content>"
                    "</jingle></iq>"
                )
            )
        return [element, *reports]

    hostile.on_stanza(slip_in, "to_client")
    error, got = await _sent_and_received(alice, bob, tmp_path, 200_000)
    assert len(forged) == 2  # both went in, behind the session-accept
    assert error is None, error
    assert got is not None
    delivered = [
        r.element.get("id")
        for r in hostile.delivered("to_client")
        if (r.element.get("id") or "").startswith("forged-report")
    ]
    assert delivered == ["forged-report0", "forged-report1"]
