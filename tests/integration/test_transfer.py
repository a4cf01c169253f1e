"""End-to-end encrypted transfers between two real clients through a real Prosody.

Each transport is forced the way a real network would force it: direct
SOCKS5 candidates that cannot be reached (a closed port) push the transfer
through the server's proxy; with no proxy either, XEP-0260 fails and the
session falls back to IBB with transport-replace.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.integration.conftest import introduce, transfer_client
from xfer.envelope import DEFAULT_CHUNK_SIZE
from xfer.errors import IntegrityError, TransferDeclined, TransferRejected
from xfer.otr.trust import Verification
from xfer.store import IdentityStore
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import KINDS, forcing
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import IncomingOffer, SendResult

pytestmark = pytest.mark.integration

MiB = 1 << 20


async def make_peers(
    prosody: LocalProsody,
    tmp_path: Path,
    a_config: dict[str, object] | None = None,
    b_config: dict[str, object] | None = None,
    *,
    trust: bool = True,
) -> tuple[XferClient, XferClient]:
    a = await transfer_client(
        prosody, "alice", "send", tmp_path / "alice-id", **(a_config or {})
    )
    b = await transfer_client(
        prosody, "bob", "recv", tmp_path / "bob-id", **(b_config or {})
    )
    if trust:
        introduce(a, b)
    return a, b


async def peers_forcing(
    kind: str, prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> tuple[XferClient, XferClient]:
    """Two trusting peers configured so that a transfer must use ``kind``."""
    config = forcing(kind)
    a, b = await make_peers(prosody, tmp_path, config, config)
    clients += [a, b]
    return a, b


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size) if size <= 4 * MiB else b""
    if data or size == 0:
        path.write_bytes(data)
        return data
    with path.open("wb") as f:  # big files: a repeated random block
        block = os.urandom(MiB)
        for i in range(size // MiB):
            f.write(block[i % 7 :] + block[: i % 7])
    return b""


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MiB):
            h.update(piece)
    return h.digest()


async def transfer(
    a: XferClient, b: XferClient, src: Path, dest: Path
) -> tuple[Path, SendResult]:
    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(dest)

    got, result = await asyncio.gather(
        receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    )
    return got, result


SIZES = [0, 1, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_sizes_over_each_transport(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    kind: str,
) -> None:
    a, b = await peers_forcing(kind, prosody, tmp_path, clients)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for size in SIZES:
        src = tmp_path / f"file-{size}.bin"
        data = write_random(src, size)
        got, result = await transfer(a, b, src, inbox)
        assert got == inbox / src.name
        assert got.read_bytes() == data
        assert result.transport == kind
        assert result.size == size
    assert sorted(p.name for p in inbox.iterdir()) == sorted(
        f"file-{s}.bin" for s in SIZES
    )


# test_sizes_over_each_transport sends every chunk-boundary size over each.
@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("kind", KINDS)
async def test_100_mib(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    kind: str,
) -> None:
    a, b = await peers_forcing(kind, prosody, tmp_path, clients)
    src = tmp_path / "big.bin"
    write_random(src, 100 * MiB)
    dest = tmp_path / "big.out"
    got, result = await transfer(a, b, src, dest)
    assert got == dest
    assert result.transport == kind
    assert sha256_file(dest) == sha256_file(src)
    assert sorted(p.name for p in tmp_path.iterdir() if "xfer-part" in p.name) == []


async def test_decline(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await make_peers(prosody, tmp_path)
    clients += [a, b]
    src = tmp_path / "unwanted.txt"
    write_random(src, 100)

    async def refuse() -> None:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=20)
        await offer.decline("no thanks")

    with pytest.raises(TransferDeclined) as caught:
        await asyncio.gather(
            refuse(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
        )
    assert caught.value.reason == "decline"
    assert caught.value.text == "no thanks"


async def test_untrusted_sender_is_refused(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    # alice trusts bob, but bob does not know alice's fingerprint.
    a, b = await make_peers(prosody, tmp_path, {"accept_untrusted": True}, trust=False)
    clients += [a, b]
    src = tmp_path / "secret.txt"
    write_random(src, 100)
    with pytest.raises(TransferRejected) as caught:
        await a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    assert caught.value.reason == "security-error"
    assert "not trusted" in (caught.value.text or "")
    assert b.plugin["xfer_transfer"]._offers.empty()  # never shown to bob's user


async def test_trust_changed_by_another_process_counts_at_the_next_offer(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """'xfer untrust alice' runs as another process while bob's client is
    running: bob reads his trust store again when it changed on disk, so
    alice's next offer is refused (not taken until bob restarts); trusted
    again, it is taken; a damaged store trusts nobody."""
    a, b = await make_peers(prosody, tmp_path)
    clients += [a, b]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = tmp_path / "one.txt"
    write_random(src, 500)
    await _send_one(a, b, src, inbox)
    elsewhere = IdentityStore(tmp_path / "bob-id")  # what 'xfer untrust' does
    store = elsewhere.trust_store()
    alice_key = store.entries(a.boundjid.bare)[0][1].fingerprint
    assert store.untrust(a.boundjid.bare) == 1
    elsewhere.save_trust_store(store)
    with pytest.raises(TransferRejected) as caught:
        await a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    assert "not trusted" in (caught.value.text or "")
    store.trust(a.boundjid.bare, alice_key, Verification.MANUAL, now=0)
    elsewhere.save_trust_store(store)
    other = tmp_path / "two.txt"  # the same file again is only confirmed
    write_random(other, 600)
    assert (await _send_one(a, b, other, inbox)).read_bytes() == other.read_bytes()
    elsewhere.trust_path.write_bytes(b"{not json")
    with pytest.raises(TransferRejected) as caught:
        await a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    assert "not trusted" in (caught.value.text or "")


async def _raw_offer(
    a: XferClient, b: XferClient, *, encrypted: bool
) -> tuple[str | None, str | None]:
    """alice sends a bare Jingle offer (no TLV 8 before it); bob's verdict."""
    from xfer.jingle import Action, Role
    from xfer.jingle.files import FileDescription
    from xfer.jingle.wire import Content, Encrypted, IBBTransport

    session = a.plugin["xfer_xep_0166"].initiate(b.boundjid.full)
    await session.send(
        session.jingle(
            Action.SESSION_INITIATE,
            initiator=a.boundjid.full,
            contents=(
                Content(
                    name="file",
                    creator=Role.INITIATOR,
                    senders="initiator",
                    description=FileDescription(name="x.xfer", size=122),
                    transport=IBBTransport(sid="ibb-1"),
                    encrypted=(
                        Encrypted(transfer_id=os.urandom(16)) if encrypted else None
                    ),
                ),
            ),
        )
    )
    answer = await session.next(timeout=20)
    assert answer.action is Action.SESSION_TERMINATE
    return (answer.reason.value if answer.reason else None), answer.reason_text


@pytest.mark.parametrize("encrypted", [True, False])
async def test_jingle_offer_without_otr_offer(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    encrypted: bool,
) -> None:
    a, b = await make_peers(prosody, tmp_path, b_config={"otr_offer_wait": 1.0})
    clients += [a, b]
    await a.plugin["xfer_otr"].secure(b.boundjid.full, timeout=20)
    reason, text = await _raw_offer(a, b, encrypted=encrypted)
    assert reason == "security-error"
    expected = "no matching offer" if encrypted else "only end-to-end encrypted"
    assert expected in (text or "")
    assert b.plugin["xfer_transfer"]._offers.empty()


class FlippingRelay:
    """A TCP relay in front of a SOCKS5 streamhost that flips one bit of the
    payload flowing back to the connecting side, ``offset`` bytes after the
    SOCKS5 handshake (a malicious or broken hop)."""

    REPLY = 2 + 4 + 1 + 40 + 2  # method choice + connect reply (40-byte address)

    def __init__(self, target: tuple[str, int], offset: int) -> None:
        self.target = target
        self.offset = offset
        self.flipped = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, flip: bool
        ) -> None:
            seen = 0
            try:
                while piece := await src.read(65536):
                    if flip and not self.flipped:
                        at = self.REPLY + self.offset - seen
                        if 0 <= at < len(piece):
                            piece = (
                                piece[:at] + bytes([piece[at] ^ 1]) + piece[at + 1 :]
                            )
                            self.flipped = True
                    seen += len(piece)
                    dst.write(piece)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_relay_flipping_one_bit(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    # The sender's only candidate is the relay in front of its own streamhost;
    # bob offers nothing, so the data must cross the relay.
    a, b = await make_peers(
        prosody,
        tmp_path,
        {"socks5_proxy": False},
        {"socks5_proxy": False, "socks5_direct": False},
    )
    clients += [a, b]
    host, port = await a.plugin["xfer_socks5"].listen()
    relay = FlippingRelay((host, port), offset=58 + 5000)
    a.plugin["xfer_transfer"].config["advertise"] = [("127.0.0.1", await relay.start())]
    src = tmp_path / "doc.bin"
    write_random(src, 3 * DEFAULT_CHUNK_SIZE)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def receive() -> None:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=20)
        await offer.accept(inbox)

    try:
        results = await asyncio.gather(
            receive(),
            a.plugin["xfer_transfer"].send_file(b.boundjid.full, src),
            return_exceptions=True,
        )
    finally:
        relay.close()
    assert relay.flipped
    assert isinstance(results[0], IntegrityError)
    assert isinstance(results[1], TransferRejected)
    assert results[1].reason == "security-error"
    assert list(inbox.iterdir()) == []


async def test_concurrent_both_directions(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await make_peers(prosody, tmp_path)
    clients += [a, b]
    inbox_a, inbox_b = tmp_path / "in-a", tmp_path / "in-b"
    inbox_a.mkdir()
    inbox_b.mkdir()
    files: dict[str, bytes] = {}
    sends = []
    for i in range(3):
        for sender, receiver, tag in ((a, b, "ab"), (b, a, "ba")):
            src = tmp_path / f"{tag}-{i}.bin"
            files[src.name] = write_random(src, 300_000 + i)
            sends.append(
                sender.plugin["xfer_transfer"].send_file(receiver.boundjid.full, src)
            )

    async def receive_all(c: XferClient, inbox: Path) -> None:
        async def one() -> None:
            offer = await c.plugin["xfer_transfer"].next_offer(timeout=30)
            await offer.accept(inbox)

        await asyncio.gather(*(one() for _ in range(3)))

    await asyncio.gather(receive_all(a, inbox_a), receive_all(b, inbox_b), *sends)
    for inbox, tag in ((inbox_a, "ba"), (inbox_b, "ab")):
        names = sorted(p.name for p in inbox.iterdir())
        assert names == [f"{tag}-{i}.bin" for i in range(3)]
        for p in inbox.iterdir():
            assert p.read_bytes() == files[p.name]


async def test_plugin_in_a_plain_slixmpp_client(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """The README's second example: xfer_transfer loaded into slixmpp's own
    ClientXMPP (not xfer's client class) receives a file."""
    import slixmpp

    import xfer.xmpp.transfer

    plain = slixmpp.ClientXMPP(
        f"bob@{prosody.domain}/plain",
        "bob-password",
        plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
    )
    plain.enable_starttls = False
    plain.enable_direct_tls = False
    plain.enable_plaintext = True
    plain.register_plugin(
        "xfer_transfer", {"identity": tmp_path / "bob-id"}, module=xfer.xmpp.transfer
    )
    started = asyncio.get_running_loop().create_future()
    plain.add_event_handler("session_start", lambda _: started.set_result(None))
    plain.connect(host="127.0.0.1", port=prosody.c2s_port)
    await asyncio.wait_for(started, 20)
    plain.send_presence()
    a = await transfer_client(prosody, "alice", "send", tmp_path / "alice-id")
    clients.append(a)
    try:
        introduce(a, plain)
        src = tmp_path / "for-plain.bin"
        data = write_random(src, 70_000)
        got, result = await transfer(a, plain, src, tmp_path)
        assert got.read_bytes() == data
        assert result.peer == plain.boundjid.full
    finally:
        await plain.disconnect()


async def _send_one(a: XferClient, b: XferClient, src: Path, inbox: Path) -> Path:
    got, _ = await transfer(a, b, src, inbox)
    return got


async def test_receiver_restarts_between_transfers(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """bob's client goes away and comes back (same identity): alice, still
    running, sees it leave, forgets the OTR session, and runs a new AKE."""
    a, b = await make_peers(prosody, tmp_path)
    clients.append(a)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = tmp_path / "first.txt"
    write_random(first, 500)
    await _send_one(a, b, first, inbox)
    await b.stop()
    b2 = await transfer_client(prosody, "bob", "recv", tmp_path / "bob-id")
    clients.append(b2)
    second = tmp_path / "second.txt"
    data = write_random(second, 700)
    got = await _send_one(a, b2, second, inbox)
    assert got.read_bytes() == data


async def test_receiver_lost_its_otr_session(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """bob loses its OTR state without alice noticing: the TLV 8 offer is
    unreadable, bob refuses the Jingle offer saying so and starts a new AKE,
    and alice offers once more under the new keys."""
    a, b = await make_peers(prosody, tmp_path)
    clients += [a, b]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = tmp_path / "first.txt"
    write_random(first, 500)
    await _send_one(a, b, first, inbox)
    assert b.plugin["xfer_otr"].account.forget(a.boundjid.full) >= 1
    second = tmp_path / "second.txt"
    data = write_random(second, 700)
    got = await _send_one(a, b, second, inbox)
    assert got.read_bytes() == data
    assert b.plugin["xfer_otr"].lost_offers(a.boundjid.full)


async def test_success_before_any_data_is_not_believed(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """Jingle is not authenticated: a session-terminate <success/> that comes
    before the sealed stream went out (a forging server, a broken peer) must
    not make send_file report the file as delivered."""
    from xfer.errors import RemoteProtocolError
    from xfer.jingle import Reason

    a, b = await make_peers(prosody, tmp_path)
    clients += [a, b]
    forged: list[asyncio.Future[None]] = []
    b.plugin["xfer_xep_0166"].on_initiate = lambda session, _: forged.append(
        asyncio.ensure_future(session.terminate(Reason.SUCCESS))
    )
    src = tmp_path / "never-sent.bin"
    write_random(src, 10_000)
    with pytest.raises(RemoteProtocolError, match="claimed success"):
        await a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    await asyncio.gather(*forged)


#: Every way the data goes: each forced transport, and IBB offered at once
#: (no SOCKS5 at all on the sender's side: no transport-replace).
IBB_AT_ONCE: dict[str, object] = {"socks5_direct": False, "socks5_proxy": False}
PATHS = [*((k, forcing(k)) for k in KINDS), ("ibb", IBB_AT_ONCE)]


@pytest.mark.parametrize(("kind", "config"), PATHS, ids=[*KINDS, "ibb-at-once"])
async def test_the_receiver_learns_the_path_the_data_took(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    kind: str,
    config: dict[str, object],
) -> None:
    """The accepted offer says which path its data took, as the sender's
    result does (the command line shows it on both sides)."""
    a, b = await make_peers(prosody, tmp_path, config, config)
    clients += [a, b]
    src = tmp_path / "f.bin"
    write_random(src, 3 * DEFAULT_CHUNK_SIZE)
    offers: list[IncomingOffer] = []

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        offers.append(offer)
        assert offer.route is None  # nothing negotiated yet
        return await offer.accept(tmp_path / "in.bin")

    _, result = await asyncio.gather(
        receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    )
    route = offers[0].route
    assert route is not None
    assert (route.kind, route.via) == (result.transport, result.via)
    assert route.kind == kind
    assert (route.via == "") is (kind == "ibb")
