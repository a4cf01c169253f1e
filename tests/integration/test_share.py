"""Encrypted shared folders end to end (spec/share.md): alice shares a tree
with bob on the local Prosody; bob lists it and fetches from it over OTR.
carol is trusted by alice but not on her list; dave is on the list but
alice does not trust his fingerprint."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

import xfer.xmpp.share as share_module
from tests.integration.conftest import introduce, transfer_client
from xfer.errors import LocalProtocolError, SharingRefused
from xfer.otr.session import Session
from xfer.otr.trust import Verification
from xfer.store import IdentityStore
from xfer.testing.prosody import LocalProsody
from xfer.transfer.share import (
    KIND_SHARE_REQUEST,
    EntryType,
    FileComing,
    GetAccepted,
    GetDone,
    Operation,
    ShareRefused,
    ShareReply,
    ShareRequest,
    decode_reply,
    encode_reply,
)
from xfer.xmpp.client import XferClient
from xfer.xmpp.share import ShareEvent, XferShare

pytestmark = pytest.mark.integration

MiB = 1 << 20


async def sharing_client(
    prosody: LocalProsody,
    user: str,
    tmp_path: Path,
    clients: list[XferClient],
    resource: str = "share",
    **config: object,
) -> XferClient:
    c = await transfer_client(
        prosody, user, resource, tmp_path / f"{user}-id", offer_timeout=20.0, **config
    )
    c.register_plugin("xfer_share", module=share_module)
    clients.append(c)
    return c


def shares(c: XferClient) -> XferShare:
    found = c.plugin["xfer_share"]
    assert isinstance(found, XferShare)
    return found


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2024" / "jan").mkdir(parents=True)
    (root / "2024" / "jan" / "a.jpg").write_bytes(b"a" * 1000)
    (root / "2024" / "b.txt").write_text("bee")
    (root / "2025").mkdir()
    (root / "2025" / "c.bin").write_bytes(os.urandom(3 * MiB))
    (root / "top.pdf").write_bytes(b"%PDF-1.7")
    (root / ".hidden").write_text("secret")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0")
    (root / "2024" / "out.txt").symlink_to(secret / "passwd")
    (root / "escape").symlink_to(secret)
    os.mkfifo(root / "2024" / "pipe")
    return root


@pytest.fixture
async def people(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> tuple[XferClient, XferClient, XferClient]:
    alice = await sharing_client(prosody, "alice", tmp_path, clients)
    bob = await sharing_client(prosody, "bob", tmp_path, clients)
    carol = await sharing_client(prosody, "carol", tmp_path, clients)
    introduce(alice, bob)
    introduce(alice, carol)
    return alice, bob, carol


def jid(c: XferClient) -> str:
    return str(c.boundjid.bare)


def full(c: XferClient) -> str:
    return str(c.boundjid.full)


async def test_share_list_and_get_a_tree(
    people: tuple[XferClient, XferClient, XferClient], tree: Path, tmp_path: Path
):
    alice, bob, _ = people
    events: list[ShareEvent] = []
    sharer = shares(alice).share(tree, [jid(bob)], report=events.append)
    try:
        top = await shares(bob).list_shared(full(alice))
        assert [(e.path, e.type) for e in top] == [
            ("2024", EntryType.DIRECTORY),
            ("2025", EntryType.DIRECTORY),
            ("top.pdf", EntryType.FILE),
        ]
        pdf = top[2]
        assert (pdf.size, pdf.media_type) == (8, "application/pdf")
        everything = await shares(bob).list_shared(full(alice), recursive=True)
        assert [e.path for e in everything] == [
            "2024",
            "2024/b.txt",
            "2024/jan",
            "2024/jan/a.jpg",
            "2025",
            "2025/c.bin",
            "top.pdf",
        ]
        dest = tmp_path / "got"
        dest.mkdir()
        result = await shares(bob).fetch(full(alice), ["2024", "top.pdf"], dest)
        assert result.ok, result.failed
        assert sorted(f.path for f in result.stored) == [
            "2024/b.txt",
            "2024/jan/a.jpg",
            "top.pdf",
        ]
        assert (dest / "2024" / "jan" / "a.jpg").read_bytes() == b"a" * 1000
        assert (dest / "2024" / "b.txt").read_text() == "bee"
        assert (dest / "top.pdf").read_bytes() == b"%PDF-1.7"
        assert not (dest / "2024" / "out.txt").exists()
        assert not (dest / "2024" / "pipe").exists()
        for got in result.stored:
            assert got.sha256 == hashlib.sha256(got.local.read_bytes()).digest()
        # The hashes of files sent (and of listed ones, in the background)
        # are listed from now on.
        for _ in range(50):
            listed = await shares(bob).list_shared(full(alice), "2024/jan/a.jpg")
            if listed[0].sha256 is not None:
                break
            await asyncio.sleep(0.1)
        assert listed[0].sha256 == hashlib.sha256(b"a" * 1000).digest()
        assert {e.kind for e in events} >= {"listed", "sending", "sent"}
    finally:
        await sharer.close()


@pytest.mark.parametrize(
    "path", ["2024/out.txt", "escape", "escape/passwd", "2024/pipe", "nope"]
)
async def test_what_is_not_shared_is_not_found(
    people: tuple[XferClient, XferClient, XferClient],
    tree: Path,
    tmp_path: Path,
    path: str,
):
    alice, bob, _ = people
    sharer = shares(alice).share(tree, [jid(bob)])
    try:
        with pytest.raises(SharingRefused) as listed:
            await shares(bob).list_shared(full(alice), path)
        assert listed.value.code == "not-found"
        got = await shares(bob).fetch(full(alice), [path, "top.pdf"], tmp_path)
        assert [f.path for f in got.stored] == ["top.pdf"]  # the next path is asked
        assert got.failed == ((path, "no such file or directory in the shared folder"),)
    finally:
        await sharer.close()


async def test_a_peer_not_on_the_list_is_refused_in_words(
    people: tuple[XferClient, XferClient, XferClient], tree: Path, tmp_path: Path
):
    alice, bob, carol = people
    sharer = shares(alice).share(tree, [jid(bob)])
    try:
        with pytest.raises(SharingRefused) as refused:
            await shares(carol).list_shared(full(alice))
        assert refused.value.code == "not-allowed"
        assert "not shared with you" in str(refused.value)
        with pytest.raises(SharingRefused):
            await shares(carol).fetch(full(alice), ["top.pdf"], tmp_path)
        assert list(tmp_path.glob("top*")) == []
    finally:
        await sharer.close()
    # Not sharing at all: said so too.
    with pytest.raises(SharingRefused) as none:
        await shares(bob).list_shared(full(alice))
    assert none.value.code == "not-sharing"


async def test_an_untrusted_fingerprint_on_the_list_is_refused(
    prosody: LocalProsody, tree: Path, tmp_path: Path, clients: list[XferClient]
):
    alice = await sharing_client(prosody, "alice", tmp_path, clients)
    dave = await sharing_client(prosody, "dave", tmp_path, clients)
    introduce(alice, dave)
    otr = alice.plugin["xfer_otr"]
    otr.trust.untrust(jid(dave))  # dave trusts alice only
    alice.plugin["xfer_transfer"].save_trust()
    sharer = shares(alice).share(tree, [jid(dave)])
    try:
        with pytest.raises(SharingRefused) as refused:
            await shares(dave).list_shared(full(alice))
        assert refused.value.code == "not-allowed"
        assert "fingerprint" in str(refused.value)
    finally:
        await sharer.close()


async def test_a_key_untrusted_by_another_process_is_refused_at_once(
    people: tuple[XferClient, XferClient, XferClient], tree: Path, tmp_path: Path
):
    """'xfer untrust' runs as another process while 'xfer share' serves: the
    sharer reads the trust store again when it changed on disk, so bob's
    next request is refused, not served until the share restarts; trusted
    again, he is served again; a damaged store serves nobody."""
    alice, bob, _ = people
    sharer = shares(alice).share(tree, [jid(bob)])
    elsewhere = IdentityStore(tmp_path / "alice-id")  # 'xfer untrust' does this
    try:
        assert await shares(bob).list_shared(full(alice))
        store = elsewhere.trust_store()
        bob_key = store.entries(jid(bob))[0][1].fingerprint
        assert store.untrust(jid(bob)) == 1
        elsewhere.save_trust_store(store)
        with pytest.raises(SharingRefused) as refused:
            await shares(bob).list_shared(full(alice))
        assert refused.value.code == "not-allowed"
        assert "does not trust your OTR fingerprint" in str(refused.value)
        store.trust(jid(bob), bob_key, Verification.MANUAL, now=0)
        elsewhere.save_trust_store(store)
        assert await shares(bob).list_shared(full(alice))
        elsewhere.trust_path.write_bytes(b"{not json")
        with pytest.raises(SharingRefused) as refused:
            await shares(bob).list_shared(full(alice))
        assert refused.value.code == "failed"
        assert "could not read its trust store" in str(refused.value)
    finally:
        await sharer.close()


async def raw_request(asker: XferClient, sharer: XferClient, payload: bytes) -> bytes:
    """Send ``payload`` as a share request inside OTR; the reply's bytes."""
    fetcher = shares(asker)._fetcher
    transfer = asker.plugin["xfer_transfer"]
    peer, session = await transfer.secure(full(sharer))
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    otr = asker.plugin["xfer_otr"]
    otr.on_share = lambda _peer, _session, data: replies.put_nowait(data)
    try:
        otr.send_private(peer, session.their_fingerprint, payload, session)
        return await asyncio.wait_for(replies.get(), 10)
    finally:
        otr.on_share = shares(asker)._on_share
        del fetcher


def crafted(path: bytes, *, op: int = 1, after: bytes = b"", rid: bytes) -> bytes:
    return (
        bytes([1, KIND_SHARE_REQUEST])
        + rid
        + bytes([op, 0])
        + len(path).to_bytes(2, "big")
        + path
        + len(after).to_bytes(2, "big")
        + after
    )


@pytest.mark.parametrize(
    "path",
    [
        b"../secret/passwd",
        b"/etc/passwd",
        b"2024/../../secret/passwd",
        b"top.pdf\x00.txt",
        b"..\\secret\\passwd",
        b"2024\\b.txt",
        "\uff0e\uff0e/secret/passwd".encode(),
        "2024\u2215..\u2215..".encode(),  # division slashes
        b".hidden",
    ],
)
async def test_traversal_and_malformed_requests_are_refused_and_the_sharer_stays_up(
    people: tuple[XferClient, XferClient, XferClient],
    tree: Path,
    tmp_path: Path,
    path: bytes,
):
    alice, bob, _ = people
    sharer = shares(alice).share(tree, [jid(bob)])
    try:
        for op in (1, 2):
            rid = os.urandom(16)
            answer = decode_reply(
                await raw_request(bob, alice, crafted(path, op=op, rid=rid))
            )
            assert isinstance(answer, ShareRefused)
            assert answer.request_id == rid
            assert answer.code.name in ("BAD_REQUEST", "NOT_FOUND")
        # Trailing bytes, an unknown version or operation: bad requests.
        rid = os.urandom(16)
        good = ShareRequest(request_id=rid, op=Operation.LIST).encode()
        for bad in (good + b"!", good[:18] + bytes([9]) + good[19:]):
            answer = decode_reply(await raw_request(bob, alice, bad))
            assert isinstance(answer, ShareRefused)
            assert answer.code.name == "BAD_REQUEST"
        # The fetcher's own API refuses to ask such things at all.
        with pytest.raises(LocalProtocolError):
            await shares(bob).list_shared(full(alice), "../secret")
        # And the sharer still serves.
        listed = await shares(bob).list_shared(full(alice))
        assert [e.path for e in listed] == ["2024", "2025", "top.pdf"]
    finally:
        await sharer.close()


async def test_a_flood_of_requests_gets_a_bounded_number_of_refusals(
    people: tuple[XferClient, XferClient, XferClient],
    tree: Path,
    caplog: pytest.LogCaptureFixture,
):
    """carol, not on the list, asks 300 times at once: she gets the budget
    of refusals (10) and nothing more, the sharer logs her once, and bob,
    on the list, is still served meanwhile."""
    alice, bob, carol = people
    events: list[ShareEvent] = []
    sharer = shares(alice).share(tree, [jid(bob)], report=events.append)
    transfer = carol.plugin["xfer_transfer"]
    peer, session = await transfer.secure(full(alice))
    replies: list[bytes] = []
    otr = carol.plugin["xfer_otr"]
    otr.on_share = lambda _peer, _session, data: replies.append(data)
    # What reaches alice's share plugin, counted on the way in.
    heard: list[str] = []
    alice_otr = alice.plugin["xfer_otr"]
    handler = alice_otr.on_share
    assert handler is not None

    def counted(peer: str, session: Session, data: bytes) -> object:
        heard.append(peer)
        return handler(peer, session, data)

    alice_otr.on_share = counted
    flood = 300
    try:
        for _ in range(flood):
            request = ShareRequest(request_id=os.urandom(16), op=Operation.LIST)
            otr.send_private(peer, session.their_fingerprint, request.encode(), session)
        for _ in range(600):
            if heard.count(full(carol)) == flood:
                break
            await asyncio.sleep(0.05)
        assert heard.count(full(carol)) == flood
        # bob, on the list, is served after the flood.
        listed = await shares(bob).list_shared(full(alice))
        assert [e.path for e in listed] == ["2024", "2025", "top.pdf"]
        await asyncio.sleep(1.0)  # for any late reply to carol
    finally:
        otr.on_share = shares(carol)._on_share
        alice_otr.on_share = handler
        await sharer.close()
    answers = [decode_reply(r) for r in replies]
    assert all(isinstance(a, ShareRefused) for a in answers)
    assert {a.code.name for a in answers if isinstance(a, ShareRefused)} == {
        "NOT_ALLOWED"
    }
    assert len(answers) == 10
    refused = [e for e in events if e.kind == "refused"]
    assert len(refused) == 10
    assert all(e.peer == full(carol) for e in refused)
    dropped = [r for r in caplog.records if "asks too often" in r.getMessage()]
    assert len(dropped) == 1
    assert jid(carol) in dropped[0].getMessage()


@pytest.mark.parametrize("when", ["once-opened", "midway"])
async def test_a_file_changed_while_shared_arrives_old_or_new_never_mixed(
    people: tuple[XferClient, XferClient, XferClient], tmp_path: Path, when: str
):
    """The file is rewritten in place (same size) after the sharer opened
    and announced it, before it reads it ("once-opened": the change must be
    seen, and the new content sent afresh), or once bytes arrive at the
    fetcher ("midway": the sender may still be reading, or may be done)."""
    alice, bob, _ = people
    root = tmp_path / "live"
    root.mkdir()
    old = os.urandom(32 * MiB)
    new = os.urandom(32 * MiB)
    (root / "big.bin").write_bytes(old)
    events: list[ShareEvent] = []
    changed = False

    def change() -> None:
        nonlocal changed
        if not changed:
            changed = True
            with (root / "big.bin").open("r+b") as f:
                f.write(new)

    def report(event: ShareEvent) -> None:
        events.append(event)
        if when == "once-opened" and event.kind == "sending":
            change()

    def midway(done: int, total: int | None) -> None:
        if when == "midway" and done:
            change()

    sharer = shares(alice).share(root, [jid(bob)], report=report)
    dest = tmp_path / "got"
    dest.mkdir()
    try:
        result = await shares(bob).fetch(
            full(alice), ["big.bin"], dest, progress=lambda _path: midway
        )
    finally:
        await sharer.close()
    assert changed
    assert result.ok, result.failed
    got = (dest / "big.bin").read_bytes()
    assert got in (old, new)  # never a mix
    tries = len([e for e in events if e.kind == "sending"])
    assert tries == (2 if got == new else 1)
    if when == "once-opened":
        assert got == new
    # (A try that broke off midway may leave its verified part, hidden, for
    # a resume of the same file id, as any receipt does.)
    assert sorted(p.name for p in dest.iterdir() if p.name[0] != ".") == ["big.bin"]


async def test_only_the_asked_fingerprint_can_answer_a_get(
    people: tuple[XferClient, XferClient, XferClient], tmp_path: Path
):
    """alice plays a sharer by hand; carol (whom bob trusts too) tries to
    slip files and replies into bob's get. Nothing of hers is taken."""
    alice, bob, carol = people
    introduce(bob, carol)
    files = tmp_path / "files"
    files.mkdir()
    (files / "real.pdf").write_bytes(b"alice's")
    (files / "fake.pdf").write_bytes(b"carol's")
    requests: asyncio.Queue[tuple[str, object, bytes]] = asyncio.Queue()
    alice.plugin["xfer_otr"].on_share = lambda p, s, d: requests.put_nowait((p, s, d))
    dest = tmp_path / "got"
    dest.mkdir()
    fetch = asyncio.ensure_future(shares(bob).fetch(full(alice), ["top.pdf"], dest))
    peer, _session, data = await asyncio.wait_for(requests.get(), 10)
    request = ShareRequest.decode(data)
    assert (request.op, request.path) == (Operation.GET, "top.pdf")
    rid = request.request_id

    def answer(reply_: ShareReply, by: XferClient = alice, to: str = peer) -> None:
        otr = by.plugin["xfer_otr"]
        s = otr.session(to)
        otr.send_private(to, s.their_fingerprint, encode_reply(reply_), s)

    answer(GetAccepted(request_id=rid, files=1, size=7))
    answer(FileComing(request_id=rid, path="top.pdf", size=7))
    answer(FileComing(request_id=rid, path="2024/b.txt", size=3))  # not asked for
    # carol offers a file under the announced name: bob's user is asked.
    await carol.plugin["xfer_transfer"].secure(full(bob))
    sending = asyncio.ensure_future(
        carol.plugin["xfer_transfer"].send_file(
            full(bob), files / "fake.pdf", name="top.pdf"
        )
    )
    offer = await bob.plugin["xfer_transfer"].next_offer(10)
    assert (offer.peer, offer.name) == (full(carol), "top.pdf")
    await offer.decline()
    with pytest.raises(Exception, match="declined"):
        await sending
    # carol learns the request id somehow and says the get is done: ignored.
    answer(GetDone(request_id=rid, sent=1, failed=0), by=carol, to=full(bob))
    # alice offers a file she did not announce within the request: asked.
    unasked = asyncio.ensure_future(
        alice.plugin["xfer_transfer"].send_file(
            full(bob), files / "fake.pdf", name="2024/b.txt"
        )
    )
    offer = await bob.plugin["xfer_transfer"].next_offer(10)
    assert (offer.peer, offer.name) == (full(alice), "2024/b.txt")
    await offer.decline()
    with pytest.raises(Exception, match="declined"):
        await unasked
    assert not fetch.done()
    # The real file, under the announced name, is taken without asking.
    sent = await alice.plugin["xfer_transfer"].send_file(
        full(bob), files / "real.pdf", name="top.pdf"
    )
    assert sent.size == 7
    answer(GetDone(request_id=rid, sent=1, failed=0))
    result = await asyncio.wait_for(fetch, 20)
    assert result.ok
    assert [f.path for f in result.stored] == ["top.pdf"]
    assert (dest / "top.pdf").read_bytes() == b"alice's"
    assert sorted(p.name for p in dest.iterdir()) == ["top.pdf"]


async def test_an_interrupted_fetch_goes_on_where_it_stopped(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
):
    # alice makes no offers of the rest of her own after the break: they go
    # where the receiver is now, so they could reach bob's new device before
    # or while it asks again, and this test is about the asking again.
    alice = await sharing_client(prosody, "alice", tmp_path, clients, resume_attempts=0)
    bob = await sharing_client(prosody, "bob", tmp_path, clients, "first")
    introduce(alice, bob)
    root = tmp_path / "big"
    root.mkdir()
    data = os.urandom(48 * MiB)
    (root / "film.bin").write_bytes(data)
    events: list[ShareEvent] = []
    sharer = shares(alice).share(root, [jid(bob)], report=events.append)
    dest = tmp_path / "got"
    dest.mkdir()
    halfway = asyncio.Event()

    def watch(done: int, total: int | None) -> None:
        if done >= 8 * MiB:
            halfway.set()

    try:
        first = asyncio.ensure_future(
            shares(bob).fetch(full(alice), ["film.bin"], dest, progress=lambda _: watch)
        )
        await asyncio.wait_for(halfway.wait(), 60)
        first.cancel()  # bob gives up and goes away
        with pytest.raises(asyncio.CancelledError):
            await first
        await bob.stop()
        assert not (dest / "film.bin").exists()
        kept = [p for p in dest.iterdir()]
        assert kept, "the verified part is kept (hidden) beside the destination"
        # bob comes back (another device of his, the same key) and asks again.
        again = await sharing_client(prosody, "bob", tmp_path, clients, "second")
        result = await shares(again).fetch(full(alice), ["film.bin"], dest)
        assert result.ok, result.failed
        assert (dest / "film.bin").read_bytes() == data
        sent = [e for e in events if e.kind == "sent"]
        assert sent
        assert "had" in sent[-1].detail  # it went on from what bob kept
        assert sorted(p.name for p in dest.iterdir()) == ["film.bin"]
    finally:
        await sharer.close()


async def test_a_big_listing_comes_in_pages(
    people: tuple[XferClient, XferClient, XferClient], tmp_path: Path
):
    alice, bob, _ = people
    root = tmp_path / "many"
    root.mkdir()
    names = sorted(f"{i:03d}-" + "n" * 200 for i in range(300))
    for name in names:
        (root / name).write_bytes(b"x")
    sharer = shares(alice).share(root, [jid(bob)])
    asked: list[str] = []
    real = alice.plugin["xfer_otr"].on_share

    def spy(peer: str, session: object, data: bytes) -> None:
        asked.append(ShareRequest.decode(data).after)
        real(peer, session, data)

    alice.plugin["xfer_otr"].on_share = spy
    try:
        listed = await shares(bob).list_shared(full(alice))
    finally:
        await sharer.close()
    assert [e.path for e in listed] == names
    assert len(asked) >= 3  # about 64 KiB of entries: three pages at least
    assert asked[0] == ""
    assert all(a in names for a in asked[1:])


async def test_at_most_two_files_go_to_one_account_at_once(
    people: tuple[XferClient, XferClient, XferClient], tmp_path: Path
):
    alice, bob, _ = people
    root = tmp_path / "five"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.bin").write_bytes(os.urandom(4 * MiB))
    now = 0
    most = 0

    def report(event: ShareEvent) -> None:
        nonlocal now, most
        if event.kind == "sending":
            now += 1
            most = max(most, now)
        elif event.kind in ("sent", "failed"):
            now -= 1

    sharer = shares(alice).share(root, [jid(bob)], report=report)
    dest = tmp_path / "got"
    dest.mkdir()
    try:
        result = await shares(bob).fetch(full(alice), [""], dest)
    finally:
        await sharer.close()
    assert result.ok, result.failed
    assert sorted(p.name for p in dest.iterdir()) == [f"{i}.bin" for i in range(5)]
    assert most == 2  # two at once, the rest waited


async def test_a_get_asked_again_over_a_renewed_session_is_served_once(
    people: tuple[XferClient, XferClient, XferClient], tree: Path, tmp_path: Path
):
    """alice reads bob's get, then a new key exchange renews their OTR
    session before she answers (as when her client had lost its half; a
    server that holds her answer and ends her XMPP session gets the same).
    bob, unanswered, asks again over the new session under the same id;
    alice serves the get once: each file goes once, and bob stores it."""
    alice, bob, _ = people
    events: list[ShareEvent] = []
    sharer = shares(alice).share(tree, [jid(bob)], report=events.append)
    otr = alice.plugin["xfer_otr"]
    held: asyncio.Queue[tuple[str, Session, bytes]] = asyncio.Queue()
    otr.on_share = lambda p, s, d: held.put_nowait((p, s, d))
    dest = tmp_path / "got"
    dest.mkdir()
    fetch = asyncio.ensure_future(shares(bob).fetch(full(alice), ["2024"], dest))
    try:
        first = await asyncio.wait_for(held.get(), 10)
        assert ShareRequest.decode(first[2]).op is Operation.GET
        old = first[1].ssid  # (the session object stays; its keys change)
        renewed = await otr.renewed(full(bob), old, timeout=10)
        assert renewed.ssid != old
        again = await asyncio.wait_for(held.get(), 10)
        assert again[0] == first[0]
        assert again[2] == first[2]  # the same request, the same id
        otr.on_share = shares(alice)._on_share
        for asked in (first, again):
            shares(alice)._on_share(*asked)
        result = await asyncio.wait_for(fetch, 30)
    finally:
        await sharer.close()
    assert result.ok, result.failed
    assert sorted(f.path for f in result.stored) == ["2024/b.txt", "2024/jan/a.jpg"]
    sending = sorted(e.path for e in events if e.kind == "sending")
    assert sending == ["2024/b.txt", "2024/jan/a.jpg"]  # each once
    assert held.empty()  # not asked a third time


async def test_a_file_where_a_folder_goes_is_named_as_the_reason(
    people: tuple[XferClient, XferClient, XferClient], tree: Path, tmp_path: Path
):
    """bob has a file named like the folder a fetched file goes to: the
    file is not stored, nothing is written over, and the reason is bob's
    own (not the sharer's word that he declined it)."""
    alice, bob, _ = people
    sharer = shares(alice).share(tree, [jid(bob)])
    dest = tmp_path / "got"
    dest.mkdir()
    (dest / "2024").write_text("mine")
    try:
        result = await shares(bob).fetch(full(alice), ["2024/b.txt"], dest)
    finally:
        await sharer.close()
    assert result.failed == (
        ("2024/b.txt", f"could not store it: {dest.resolve() / '2024'} is in the way"),
    )
    assert (dest / "2024").read_text() == "mine"
    assert sorted(p.name for p in dest.iterdir()) == ["2024"]
