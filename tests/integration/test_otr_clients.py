"""xfer against a real libotr client over XMPP (issue 15, "Prove it").

The libotr peer (:class:`tests.interop.otrclient.OTRClientPeer`: slixmpp and
libotr 4.1 with libotr's default policy, v2 and v3, whitespace tags, an error
starts an AKE) stands for the libotr clients, Pidgin, mcabber and others; it
talks to real xfer clients (:class:`xfer.api.Client`) on the local Prosody.

Tests of behaviour that is known to be broken are strict xfails that name
the item of issue 15 that fixes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import xfer
from tests.conftest import require_or_skip
from tests.interop.libotr import POLICY_DEFAULT, POLICY_V2_ONLY, find_libotr
from tests.interop.otrclient import OTRClientPeer, eventually, online
from xfer.api import Client
from xfer.errors import TransferTimeout
from xfer.otr.crypto import PrivateKey
from xfer.otr.fingerprint import format_fingerprint
from xfer.otr.trust import SMPResult
from xfer.testing.prosody import LocalProsody
from xfer.transfer.offer import XFER_USE, TransferOffer
from xfer.xmpp.otr import XferOTR

pytestmark = [pytest.mark.integration, pytest.mark.otrclients]

#: The accounts of this module: the libotr user and the xfer user.
LO, XF = "libotr", "xferuser"
LO_TAG = 0x5EED0001
SECRET = "correct horse"
_tags = itertools.count(LO_TAG + 1)
#: The whitespace tag of a plain message that offers OTR, and the part of it
#: that offers version 3.
WHITESPACE_BASE, WHITESPACE_V3 = " \t  \t\t\t\t \t \t \t  ", "  \t\t  \t\t"

MakePeer = Callable[..., Awaitable[OTRClientPeer]]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture(scope="module")
def lo_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
async def make_peer(
    prosody: LocalProsody, tmp_path: Path, lo_key: PrivateKey
) -> AsyncIterator[MakePeer]:
    """Log libotr peers in (each with its own resource); stopped at the end."""
    require_or_skip(find_libotr() is not None, "libotr (Debian package libotr5)")
    prosody.add_accounts({LO: f"{LO}-password", XF: f"{XF}-password"})
    made: list[OTRClientPeer] = []

    async def make(
        resource: str = "pidgin",
        *,
        policy: int = POLICY_DEFAULT,
        instag: int = LO_TAG,
        bare_contexts: bool = True,
    ) -> OTRClientPeer:
        peer = await OTRClientPeer.connect(
            prosody,
            LO,
            resource,
            tmp_path / f"libotr-{resource}",
            key=lo_key,
            instag=instag,
            policy=policy,
            bare_contexts=bare_contexts,
        )
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.stop()


@pytest.fixture
async def make_client(
    prosody: LocalProsody, tmp_path: Path, make_peer: MakePeer
) -> AsyncIterator[MakeClient]:
    """Log xfer clients of the xfer user in; closed at the end."""
    made: list[Client] = []
    before = set(multiprocessing.active_children())

    async def make(resource: str = "xfer", identity: str = "xfer-id") -> Client:
        client = await xfer.connect(
            f"{XF}@{prosody.domain}/{resource}",
            prosody.accounts[XF],
            identity=tmp_path / identity,
            host="127.0.0.1",
            port=prosody.c2s_port,
            tls="none",
        )
        made.append(client)
        await online(client.xmpp)
        return client

    yield make
    for client in made:
        await client.close()
    # close() stopped their SMP workers (the pool shuts down without waiting).
    for _ in range(100):
        if set(multiprocessing.active_children()) <= before:
            break
        await asyncio.sleep(0.05)
    assert set(multiprocessing.active_children()) <= before


@pytest.fixture
async def lo(make_peer: MakePeer) -> OTRClientPeer:
    return await make_peer()


@pytest.fixture
async def xf(make_client: MakeClient) -> Client:
    return await make_client()


def otr(client: Client) -> XferOTR:
    plugin = client.xmpp.plugin["xfer_otr"]
    assert isinstance(plugin, XferOTR)
    return plugin


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def raw_fingerprint(text: str) -> str:
    return text.replace(" ", "").upper()


def xfer_events(client: Client, prefix: str = "xfer") -> list[tuple[str, Any]]:
    """Every slixmpp event of ``client`` whose name starts with ``prefix``,
    from now on."""
    seen: list[tuple[str, Any]] = []
    xmpp = client.xmpp
    fire = xmpp.event

    def event(name: str, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(prefix):
            seen.append((name, data))
        return fire(name, {} if data is None else data, *args, **kwargs)

    xmpp.event = event  # type: ignore[method-assign]
    return seen


async def encrypted(lo: OTRClientPeer, xf: Client, timeout: float = 10) -> None:
    """Until both sides are ENCRYPTED with each other."""
    await lo.wait_for(
        lambda: lo.msgstate(xf.jid) == "encrypted", timeout, "libotr encrypted"
    )
    await eventually(
        lambda: otr(xf).session(lo.jid) is not None, timeout, "xfer encrypted"
    )


async def secured(lo: OTRClientPeer, xf: Client) -> None:
    """An OTR conversation started the usual way (libotr's query)."""
    lo.query(xf.jid)
    await encrypted(lo, xf)


def trusted(xf: Client, lo: OTRClientPeer) -> bool:
    return otr(xf).is_trusted(lo.jid)


# -- AKE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "bare_contexts"),
    [
        ("libotr-queries-bare-jid", True),
        ("libotr-queries-full-jid", True),
        ("libotr-queries-full-jid", False),
        ("xfer-queries", True),
        ("xfer-commits", True),
    ],
    ids=[
        "libotr-queries-bare-jid",
        "libotr-queries-full-jid",
        "libotr-per-resource-contexts",
        "xfer-queries",
        "xfer-commits",
    ],
)
async def test_ake_started_by_either_side(
    make_peer: MakePeer, xf: Client, lo_key: PrivateKey, how: str, bare_contexts: bool
) -> None:
    lo = await make_peer(bare_contexts=bare_contexts)
    if how == "libotr-queries-bare-jid":
        lo.query(bare(xf.jid))
    elif how == "libotr-queries-full-jid":
        lo.query(xf.jid)
    else:
        # A bare JID gets xfer's query (?OTRv3?), a full one its D-H Commit.
        full, fingerprint, is_trusted = await asyncio.wait_for(
            xf.secure(bare(lo.jid) if how == "xfer-queries" else lo.jid), 15
        )
        assert full == lo.jid
        assert raw_fingerprint(fingerprint) == raw_fingerprint(lo.otr.fingerprint())
        assert not is_trusted
    await encrypted(lo, xf)
    session = otr(xf).session(lo.jid)
    assert session is not None
    # Both hold the other's key, and the instance tags agree.
    assert session.their_fingerprint == lo_key.public.fingerprint
    mine = otr(xf).account.private_key.public.fingerprint
    assert lo.otr.new_fingerprints == [(lo.contact(xf.jid), mine)]
    assert raw_fingerprint(xf.fingerprint) == mine.hex().upper()
    assert session.their_tag == LO_TAG
    assert lo.secure_instances() == {otr(xf).account.our_tag}
    assert lo.errors() == []
    if how.startswith("xfer"):
        assert lo.sent[0][1].startswith("?OTR:")  # its D-H Commit or D-H Key
    else:
        assert lo.sent[0][1].startswith("?OTRv23?")


async def test_text_from_the_libotr_peer_arrives_inside_otr(
    lo: OTRClientPeer, xf: Client
) -> None:
    got: list[tuple[str, str]] = []
    xf.xmpp.add_event_handler("xfer_otr_message", got.append)
    await secured(lo, xf)
    texts = ["hello from Pidgin", "é ✓ ünïcode", "x" * 3000]
    for text in texts:
        lo.send(xf.jid, text)
    await eventually(lambda: len(got) == len(texts), 10, "the texts")
    assert got == [(lo.jid, text) for text in texts]
    # Each went out encrypted.
    bodies = [body for _, body in lo.sent[-len(texts) :]]
    assert all(body.startswith("?OTR:") for body in bodies)
    assert not any(text in body for text in texts for body in bodies)


# -- SMP --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "same"),
    [(None, True), ("Where did we meet?", True), (None, False), ("Our pet?", False)],
    ids=["no-question-same", "question-same", "no-question-other", "question-other"],
)
async def test_smp_started_by_libotr(
    lo: OTRClientPeer, xf: Client, question: str | None, same: bool
) -> None:
    await secured(lo, xf)
    lo.smp_start(xf.jid, SECRET.encode(), question)
    who, asked = await xf.next_verification(10, peer=bare(lo.jid))
    assert (who, asked) == (lo.jid, question)
    ok = await asyncio.wait_for(
        xf.answer_verification(who, SECRET if same else "battery staple"), 20
    )
    assert ok is (SMPResult.SUCCEEDED if same else SMPResult.FAILED)
    await lo.wait_for(lambda: len(lo.smp_events()) >= 2, 10, "libotr's verdict")
    assert lo.smp_events() == [
        ("in_progress", None),
        ("success" if same else "failure", None),
    ]
    assert trusted(xf, lo) is same
    assert lo.errors() == []


@pytest.mark.parametrize(
    ("question", "same"),
    [(None, True), ("Where did we meet?", True), (None, False), ("Our pet?", False)],
    ids=["no-question-same", "question-same", "no-question-other", "question-other"],
)
async def test_smp_started_by_xfer(
    lo: OTRClientPeer, xf: Client, question: str | None, same: bool
) -> None:
    await secured(lo, xf)
    verifying = asyncio.ensure_future(xf.verify(lo.jid, SECRET, question=question))
    try:
        kind = "ask_for_answer" if question else "ask_for_secret"
        await lo.wait_for(lo.smp_events, 10, "libotr is asked")
        assert lo.smp_events() == [(kind, question)]
        lo.smp_respond(xf.jid, (SECRET if same else "battery staple").encode())
        ok = await asyncio.wait_for(verifying, 20)
    finally:
        verifying.cancel()
    assert ok is (SMPResult.SUCCEEDED if same else SMPResult.FAILED)
    await lo.wait_for(lambda: len(lo.smp_events()) >= 2, 10, "libotr's verdict")
    assert lo.smp_events()[-1] == ("success" if same else "failure", None)
    assert trusted(xf, lo) is same
    assert lo.errors() == []


async def _verify_aborted_by_libotr(lo: OTRClientPeer, xf: Client) -> object:
    """xfer verifies, libotr's user aborts instead of answering: what
    xfer's verify gave (its result, or the exception it raised)."""
    await secured(lo, xf)
    verifying = asyncio.ensure_future(xf.verify(lo.jid, SECRET))
    try:
        await lo.wait_for(lo.smp_events, 10, "libotr is asked")
        lo.smp_abort(xf.jid)
        (outcome,) = await asyncio.wait_for(
            asyncio.gather(verifying, return_exceptions=True), 10
        )
    finally:
        verifying.cancel()
    return outcome


async def test_smp_aborted_by_libotr(lo: OTRClientPeer, xf: Client) -> None:
    outcome = await _verify_aborted_by_libotr(lo, xf)
    assert outcome is SMPResult.ABORTED  # not left waiting, not a failure
    assert not trusted(xf, lo)
    # The conversation goes on, and a new SMP works.
    lo.smp_start(xf.jid, SECRET.encode())
    who, _ = await xf.next_verification(10, peer=bare(lo.jid))
    assert await asyncio.wait_for(xf.answer_verification(who, SECRET), 20)
    assert trusted(xf, lo)
    assert lo.errors() == []


async def test_answering_a_verification_libotr_aborted(
    lo: OTRClientPeer, xf: Client
) -> None:
    """libotr's user asks, then aborts before xfer's user answers: the
    answer fails at once (it trusts nobody), and the next SMP works."""
    await secured(lo, xf)
    lo.smp_start(xf.jid, SECRET.encode(), "still there?")
    who, _ = await xf.next_verification(10, peer=bare(lo.jid))
    done: list[tuple[str, SMPResult]] = []
    xf.xmpp.add_event_handler("xfer_otr_smp_done", done.append)
    lo.smp_abort(xf.jid)
    # The abort arrives first (it goes through the server: waited for, not
    # assumed to take less than some fixed time).
    await eventually(lambda: (who, SMPResult.ABORTED) in done, 10, "the abort")
    (outcome,) = await asyncio.wait_for(
        asyncio.gather(xf.answer_verification(who, SECRET), return_exceptions=True),
        10,
    )
    assert outcome is not SMPResult.SUCCEEDED
    assert not trusted(xf, lo)
    lo.smp_start(xf.jid, SECRET.encode())
    who, _ = await xf.next_verification(10, peer=bare(lo.jid))
    assert await asyncio.wait_for(xf.answer_verification(who, SECRET), 20)
    assert trusted(xf, lo)
    assert lo.errors() == []


async def test_smp_aborted_by_xfer(lo: OTRClientPeer, xf: Client) -> None:
    """xfer gives up a verification nobody answers: libotr hears the abort."""
    await secured(lo, xf)
    with pytest.raises(TransferTimeout):
        await otr(xf).verify(lo.jid, SECRET.encode(), timeout=1.5)
    await lo.wait_for(lambda: ("abort", None) in lo.smp_events(), 10, "the abort")
    assert not trusted(xf, lo)
    # libotr's next SMP is a fresh one.
    lo.smp_start(xf.jid, SECRET.encode(), "again?")
    who, question = await xf.next_verification(10, peer=bare(lo.jid))
    assert question == "again?"
    assert await asyncio.wait_for(xf.answer_verification(who, SECRET), 20)
    assert lo.errors() == []


# -- the extra symmetric key (TLV 8) ------------------------------------------------


async def test_extra_symmetric_key_both_ways(lo: OTRClientPeer, xf: Client) -> None:
    """A transfer offer in TLV 8 each way: libotr derives the same key."""
    await secured(lo, xf)
    plugin = otr(xf)
    offer = TransferOffer(
        transfer_id=b"t" * 16,
        salt=b"s" * 32,
        suite=1,
        chunk_size=65536,
        size=10,
        sha256=b"h" * 32,
        name="report.pdf",
    )
    full, session = await plugin.secure(lo.jid)
    assert session.their_fingerprint is not None
    key = plugin.send_offer(session, offer, fingerprint=session.their_fingerprint)
    await lo.wait_for(
        lambda: any(e[0] == "symkey" for e in lo.events), 10, "libotr's TLV 8"
    )
    (symkey,) = [e for e in lo.events if e[0] == "symkey"]
    assert symkey == ("symkey", XFER_USE, offer.encode(), key)
    # libotr -> xfer (from a fingerprint xfer's user trusts: xfer keeps it).
    xf.trust(bare(lo.jid), format_fingerprint(session.their_fingerprint))
    back = dataclasses.replace(offer, transfer_id=b"u" * 16)
    key = lo.symkey(xf.jid, XFER_USE, back.encode())
    got = await plugin.claim_offer(full, back.transfer_id, timeout=10)
    assert got is not None
    assert (got.offer, got.key, got.trusted) == (back, key, True)
    assert lo.errors() == []


# -- known broken (issue 15) -----------------------------------------------------


async def test_whitespace_tag_starts_the_ake(lo: OTRClientPeer, xf: Client) -> None:
    got: list[tuple[str, str]] = []
    xf.xmpp.add_event_handler("xfer_otr_message", got.append)
    lo.send(xf.jid, "hi, shall we talk privately?")
    (_, body) = lo.sent[-1]
    assert body.startswith("hi, shall we talk privately?")
    # libotr tagged it (its default policy): the base tag, then v2's and v3's.
    assert body.endswith(WHITESPACE_V3)
    assert WHITESPACE_BASE in body
    await encrypted(lo, xf, timeout=5)
    assert lo.errors() == []
    lo.send(xf.jid, "now in private")
    await eventually(lambda: got, 5, "the text")
    assert got == [(lo.jid, "now in private")]


async def test_v2_only_client_is_told_v3_is_needed(
    make_peer: MakePeer, xf: Client
) -> None:
    v2 = await make_peer("libotr3", policy=POLICY_V2_ONLY)
    seen = xfer_events(xf)
    v2.query(xf.jid)
    assert v2.sent[-1][1].startswith("?OTRv2?")
    await v2.wait_for(lambda: v2.received, 5, "xfer's answer")
    (answer,) = v2.received
    assert answer.frm == xf.jid
    assert not answer.encrypted
    assert not answer.text.startswith("?OTR")
    assert "OTR" in answer.text
    assert "3" in answer.text
    assert any(bare(v2.jid) in str(data) for _, data in seen), seen
    assert v2.msgstate(xf.jid) == "plaintext"
    assert v2.errors() == []


async def test_two_clients_of_one_account_are_two_instances(
    make_peer: MakePeer, make_client: MakeClient
) -> None:
    """Two xfer clients of one installation (one identity directory, two
    resources), the libotr peer queries the bare JID: two sessions, one per
    instance tag, and no OTR error; five times over."""
    for round_ in range(5):
        one = await make_client(f"one{round_}")
        two = await make_client(f"two{round_}")
        lo_tag = next(_tags)
        lo = await make_peer(f"pidgin{round_}", instag=lo_tag)
        await _two_instances(lo, lo_tag, one, two)
        for xf in (one, two):
            await xf.close()
        await lo.stop()


async def _two_instances(
    lo: OTRClientPeer, lo_tag: int, one: Client, two: Client
) -> None:
    lo.query(bare(one.jid))
    for xf in (one, two):
        await encrypted(lo, xf)
    tags = {otr(xf).account.our_tag for xf in (one, two)}
    assert len(tags) == 2
    assert lo.secure_instances() == tags
    assert lo.errors() == []
    for xf in (one, two):
        session = otr(xf).session(lo.jid)
        assert session is not None
        assert session.their_tag == lo_tag
    # Each instance reads its own text, though both clients get both
    # messages (sent to the account's bare JID, as some clients do).
    lo.route_by_instance = False
    got: dict[str, list[tuple[str, str]]] = {one.jid: [], two.jid: []}
    for xf in (one, two):
        xf.xmpp.add_event_handler("xfer_otr_message", got[xf.jid].append)
        lo.send(bare(xf.jid), f"to {xf.jid}", otr(xf).account.our_tag)
    assert {to for to, _ in lo.sent[-2:]} == {bare(one.jid)}
    await eventually(lambda: all(got.values()), 5, "the texts")
    await asyncio.sleep(0.2)  # nothing more comes
    assert got == {xf.jid: [(lo.jid, f"to {xf.jid}")] for xf in (one, two)}
    assert lo.errors() == []


async def test_failed_smp_after_a_successful_one_untrusts(
    lo: OTRClientPeer, xf: Client
) -> None:
    await secured(lo, xf)
    for secret, same in ((SECRET, True), ("battery staple", False)):
        verifying = asyncio.ensure_future(xf.verify(lo.jid, SECRET))
        try:
            await lo.wait_for(
                lambda: ("ask_for_secret", None) in lo.smp_events(), 10, "asked"
            )
            lo.events.clear()
            lo.smp_respond(xf.jid, secret.encode())
            assert await asyncio.wait_for(verifying, 20) is (
                SMPResult.SUCCEEDED if same else SMPResult.FAILED
            )
        finally:
            verifying.cancel()
        assert trusted(xf, lo) is same


async def test_smp_abort_is_reported_as_an_abort(lo: OTRClientPeer, xf: Client) -> None:
    outcome = await _verify_aborted_by_libotr(lo, xf)
    assert outcome is SMPResult.ABORTED
