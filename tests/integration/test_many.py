"""One file to several recipients through a real Prosody: concurrent
transfers under separate keys, one read of the file, failures kept apart."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.integration.conftest import introduce, transfer_client
from xfer.aio.bytestream import ProgressCallback
from xfer.errors import NotSecure, TransferDeclined, TransferTimeout, UntrustedPeer
from xfer.testing.faults import FaultProxy
from xfer.testing.prosody import LocalProsody
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import IncomingOffer, SendResult

pytestmark = pytest.mark.integration

MiB = 1 << 20
EXTRA = {f"r{i}": f"r{i}-password" for i in range(1, 6)}


async def receivers(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    names: list[str],
) -> list[XferClient]:
    prosody.add_accounts(EXTRA)
    made = await asyncio.gather(
        *(
            transfer_client(prosody, name, "recv", tmp_path / f"{name}-id")
            for name in names
        )
    )
    clients += made
    return list(made)


async def accept_into(c: XferClient, dest: Path) -> IncomingOffer:
    offer = await c.plugin["xfer_transfer"].next_offer(timeout=60)
    await offer.accept(dest)
    return offer


async def test_one_file_to_five_one_declines_one_offline(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    alice = await transfer_client(
        prosody, "alice", "send", tmp_path / "alice-id", probe_timeout=3.0
    )
    clients.append(alice)
    online = await receivers(prosody, tmp_path, clients, ["r1", "r2", "r3", "r4"])
    for r in online:
        introduce(alice, r)
    # r5 is trusted but never logs in: offline.
    offline = await transfer_client(prosody, "r5", "gone", tmp_path / "r5-id")
    introduce(alice, offline)
    await offline.stop()
    src = tmp_path / "src.bin"
    data = os.urandom(3 * MiB + 17)
    src.write_bytes(data)
    progressed: dict[str, int] = {}

    def progress(peer: str) -> ProgressCallback:
        def report(done: int, total: int) -> None:
            progressed[peer] = done

        return report

    async def decline(c: XferClient) -> None:
        offer = await c.plugin["xfer_transfer"].next_offer(timeout=60)
        await offer.decline("not today")

    dests = [tmp_path / f"got-{i}" for i in range(3)]
    peers = [r.boundjid.bare for r in online] + [f"r5@{prosody.domain}"]
    result, *offers = await asyncio.gather(
        alice.plugin["xfer_transfer"].send_file_to_many(peers, src, progress=progress),
        *(accept_into(r, d) for r, d in zip(online[:3], dests, strict=True)),
        decline(online[3]),
    )
    sent, failed = result.sent, result.failed
    assert sorted(sent) == sorted(peers[:3])
    for path in dests:
        assert path.read_bytes() == data
    for r in sent.values():
        assert isinstance(r, SendResult)
        assert r.sha256 == hashlib.sha256(data).digest()
        assert progressed[r.peer.split("/")[0]] == len(data)
    assert isinstance(failed[peers[3]], TransferDeclined)
    assert isinstance(failed[peers[4]], NotSecure)
    assert "offline" in str(failed[peers[4]])
    # The file was read once for the three that took it, and hashed once.
    assert result.bytes_read == len(data)
    assert result.bytes_hashed == len(data)
    # Three offers under three different keys: nothing sealed once and shared.
    assert len({o.transfer_id for o in offers if o}) == 3
    assert len({o.offer.salt for o in offers if o}) == 3
    assert len({o._negotiated.key for o in offers if o}) == 3


async def test_untrusted_recipient_gets_nothing_others_do(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    alice = await transfer_client(prosody, "alice", "send2", tmp_path / "alice-id")
    clients.append(alice)
    good, stranger = await receivers(prosody, tmp_path, clients, ["r1", "r2"])
    introduce(alice, good)  # r2 is never trusted
    src = tmp_path / "src.bin"
    data = os.urandom(MiB + 5)
    src.write_bytes(data)
    result, offer = await asyncio.gather(
        alice.plugin["xfer_transfer"].send_file_to_many(
            [good.boundjid.bare, stranger.boundjid.bare, alice.boundjid.bare], src
        ),
        accept_into(good, tmp_path / "got"),
    )
    assert (tmp_path / "got").read_bytes() == data
    assert offer.trusted
    assert list(result.results) == [good.boundjid.bare, stranger.boundjid.bare]
    assert isinstance(result.failed[stranger.boundjid.bare], UntrustedPeer)
    # Nothing was offered to the untrusted key.
    with pytest.raises(TransferTimeout):
        await stranger.plugin["xfer_transfer"].next_offer(timeout=1)


async def test_one_recipient_breaks_off_resumes_alone_the_other_shares(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """alice's streamhost is reachable only through a fault proxy, which cuts
    one bytestream after 6 MiB: that recipient resumes under a fresh offer
    and reads the rest on its own; both get the whole file."""
    alice = await transfer_client(
        prosody, "alice", "send", tmp_path / "alice-id", socks5_proxy=False
    )
    clients.append(alice)
    host, port = await alice.plugin["xfer_socks5"].listen()
    proxy = FaultProxy(host, port)
    await proxy.start()
    try:
        alice.plugin["xfer_transfer"].config["advertise"] = [(proxy.host, proxy.port)]
        receivers = [
            await transfer_client(
                prosody,
                name,
                "recv",
                tmp_path / f"{name}-id",
                socks5_proxy=False,
                socks5_direct=False,
                ibb=False,
            )
            for name in ("bob", "carol")
        ]
        clients += receivers
        for r in receivers:
            introduce(alice, r)
        src = tmp_path / "src.bin"
        data = os.urandom(16 * MiB + 3)
        src.write_bytes(data)
        proxy.cut_after(6 * MiB, direction="down", graceful=True)
        dests = [tmp_path / "bob-got", tmp_path / "carol-got"]
        result, *_ = await asyncio.wait_for(
            asyncio.gather(
                alice.plugin["xfer_transfer"].send_file_to_many(
                    [r.boundjid.bare for r in receivers], src
                ),
                *(accept_into(r, d) for r, d in zip(receivers, dests, strict=True)),
            ),
            120,
        )
    finally:
        await proxy.stop()
    assert proxy.cuts == 1
    assert not result.failed
    for dest in dests:
        assert dest.read_bytes() == data
    broken = [r for r in result.sent.values() if r.breaks]
    assert len(broken) == 1
    rest = len(data) - broken[0].resumed_from
    assert 0 < rest < len(data)
    # The resume read its rest alone (and the prefix again, for its digest,
    # which is not the shared reader's); the first pass was shared.
    assert result.bytes_read_alone == rest
    assert result.bytes_read == len(data) + rest
    assert result.bytes_hashed == len(data)  # the resume hashed for itself
