"""Transfers that break off go on from the last verified byte, under fresh keys.

The breaks are real: a :class:`~xfer.testing.faults.FaultProxy` sits in the
SOCKS5 path (in front of the sender's streamhost) or between a client and
Prosody, and cuts the TCP connection mid-stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.integration.conftest import introduce, transfer_client
from xfer.aio.partial import PART_SUFFIX, STATE_SUFFIX
from xfer.errors import TransportError
from xfer.testing.faults import FaultProxy
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import SendResult

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """Where bob receives."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).digest()


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name.endswith((PART_SUFFIX, STATE_SUFFIX))
    )


async def proxied_streamhost(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
    *,
    sender: dict[str, object] | None = None,
    receiver: dict[str, object] | None = None,
) -> tuple[XferClient, XferClient, FaultProxy]:
    """alice sends over SOCKS5 through a fault proxy to her own streamhost;
    bob offers no candidates of his own, so that is the only path."""
    a = await transfer_client(
        prosody,
        "alice",
        "send",
        tmp_path / "alice-id",
        socks5_proxy=False,
        **(sender or {}),
    )
    clients.append(a)
    host, port = await a.plugin["xfer_socks5"].listen()
    proxy = FaultProxy(host, port)
    await proxy.start()
    proxies.append(proxy)
    a.plugin["xfer_transfer"].config["advertise"] = [(proxy.host, proxy.port)]
    b = await transfer_client(
        prosody,
        "bob",
        "recv",
        tmp_path / "bob-id",
        socks5_proxy=False,
        socks5_direct=False,
        ibb=False,
        **(receiver or {}),
    )
    clients.append(b)
    introduce(a, b)
    return a, b, proxy


async def send_and_receive(
    a: XferClient, b: XferClient, src: Path, dest: Path
) -> tuple[Path, SendResult]:
    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(dest)

    return await asyncio.wait_for(
        asyncio.gather(
            receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
        ),
        120,
    )


async def test_a_cut_bytestream_resumes_from_the_verified_prefix(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    a, b, proxy = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "big.bin"
    digest = random_file(src, 24 * MiB + 5)
    # The stream ends (FIN) after 10 MiB: everything before arrives.
    proxy.cut_after(10 * MiB, direction="down", graceful=True)
    got, result = await send_and_receive(a, b, src, inbox)
    assert proxy.cuts == 1
    assert hashlib.sha256(got.read_bytes()).digest() == digest
    assert result.breaks == 1
    # Every whole chunk of the 10 MiB was verified and kept; only the rest
    # was sent again, under a new key.
    assert 9 * MiB < result.resumed_from < 10 * MiB
    assert result.sealed_size < 24 * MiB + 5 - result.resumed_from + 64 * 1024
    assert leftovers(inbox) == []


async def test_a_reset_bytestream_resumes(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """A reset (RST) loses what the receiver's kernel still held: the
    transfer goes on from whatever had been verified, perhaps nothing."""
    a, b, proxy = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "big.bin"
    digest = random_file(src, 12 * MiB)
    proxy.cut_after(6 * MiB, direction="down")
    got, result = await send_and_receive(a, b, src, inbox)
    assert proxy.cuts == 1
    assert result.breaks == 1
    assert 0 <= result.resumed_from < 6 * MiB
    assert hashlib.sha256(got.read_bytes()).digest() == digest
    assert leftovers(inbox) == []


async def test_two_breaks_in_a_row_still_arrive_whole(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    a, b, proxy = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "big.bin"
    digest = random_file(src, 20 * MiB)
    proxy.cut_after(6 * MiB, direction="down", graceful=True)
    proxy.cut_after(6 * MiB, direction="down", graceful=True)
    got, result = await send_and_receive(a, b, src, inbox)
    assert proxy.cuts == 2
    assert result.breaks == 2
    assert hashlib.sha256(got.read_bytes()).digest() == digest
    assert leftovers(inbox) == []


async def test_a_receipt_given_up_keeps_its_prefix_for_the_next_offer(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """As after killed processes: both sides give up, the verified prefix
    and its state stay beside the destination, and the next offer of the
    same file goes on from there."""
    a, b, proxy = await proxied_streamhost(
        prosody,
        tmp_path,
        clients,
        proxies,
        sender={"resume_attempts": 0},
        receiver={"resume_wait": 0.5},
    )
    src = tmp_path / "movie.bin"
    digest = random_file(src, 16 * MiB + 3)
    proxy.cut_after(8 * MiB, direction="down", graceful=True)
    with pytest.raises(TransportError):
        await send_and_receive(a, b, src, inbox)
    # Whichever side failed first, let the other finish giving up.
    for _ in range(100):
        if len(leftovers(inbox)) == 2 and not b.plugin["xfer_transfer"]._receipts:
            break
        await asyncio.sleep(0.1)
    kept = leftovers(inbox)
    assert [Path(n).suffix for n in kept] == [PART_SUFFIX, STATE_SUFFIX]
    assert not (inbox / "movie.bin").exists()
    part = inbox / kept[0]
    assert 7 * MiB < part.stat().st_size < 8 * MiB
    assert part.read_bytes() == src.read_bytes()[: part.stat().st_size]

    offer_seen: list[int] = []

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        offer_seen.append(await asyncio.to_thread(offer.resumes_from, inbox))
        return await offer.accept(inbox)

    got, result = await asyncio.gather(
        receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    )
    assert got == inbox / "movie.bin"
    assert hashlib.sha256(got.read_bytes()).digest() == digest
    assert result.resumed_from == offer_seen[0] > 0
    assert leftovers(inbox) == []


async def test_a_dropped_server_connection_resumes_the_stream_and_the_file(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """alice reaches Prosody through a fault proxy that cuts her XMPP
    connection during an IBB transfer: the client reconnects and resumes
    its XEP-0198 session, and the transfer goes on with the rest."""
    proxy = FaultProxy("127.0.0.1", prosody.c2s_port)
    await proxy.start()
    proxies.append(proxy)
    a = await transfer_client(
        prosody, "alice", "flaky", tmp_path / "alice-id", via=proxy, **forcing("ibb")
    )
    clients.append(a)
    resumed: list[object] = []
    a.add_event_handler("session_resumed", resumed.append)
    b = await transfer_client(
        prosody, "bob", "recv", tmp_path / "bob-id", **forcing("ibb")
    )
    clients.append(b)
    introduce(a, b)
    src = tmp_path / "doc.bin"
    digest = random_file(src, 6 * MiB)
    proxy.cut_after(3 * MiB, direction="up")
    got, result = await send_and_receive(a, b, src, inbox)
    assert proxy.cuts == 1
    assert resumed, "the XEP-0198 session was not resumed"
    assert result.breaks >= 1
    assert hashlib.sha256(got.read_bytes()).digest() == digest
    assert leftovers(inbox) == []


async def test_an_offer_of_a_file_just_received_is_confirmed_not_asked_again(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """A sender whose connection dropped while the receiver finished does
    not know it finished, and offers the rest again: the receiver asks for
    the empty rest, checks it and its file against the new offer, and says
    success; its user is not asked about the same file twice."""
    a, b, _ = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "report.bin"
    digest = random_file(src, 300_000)
    got, first = await send_and_receive(a, b, src, inbox)
    assert first.resumed_from == 0
    again = await asyncio.wait_for(
        a.plugin["xfer_transfer"].send_file(b.boundjid.full, src), 30
    )
    assert again.resumed_from == again.size == 300_000
    assert b.plugin["xfer_transfer"]._offers.empty()
    assert sorted(p.name for p in inbox.iterdir()) == ["report.bin"]
    assert hashlib.sha256(got.read_bytes()).digest() == digest


async def test_a_file_changed_since_it_was_received_is_offered_anew(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """Only the very file, still in place, is confirmed: once the receiver
    moved it away, the same offer goes to its user again."""
    a, b, _ = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "report.bin"
    digest = random_file(src, 300_000)
    got, _ = await send_and_receive(a, b, src, inbox)
    got.rename(tmp_path / "moved.bin")
    got2, again = await send_and_receive(a, b, src, inbox)
    assert again.resumed_from == 0
    assert got2 == inbox / "report.bin"
    assert hashlib.sha256(got2.read_bytes()).digest() == digest


async def test_the_same_content_under_another_name_is_another_file(
    prosody: LocalProsody,
    tmp_path: Path,
    inbox: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    a, b, _ = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    src = tmp_path / "report.bin"
    random_file(src, 1000)
    await send_and_receive(a, b, src, inbox)
    copy = tmp_path / "copy.bin"
    copy.write_bytes(src.read_bytes())
    got, again = await send_and_receive(a, b, copy, inbox)
    assert got == inbox / "copy.bin"
    assert again.resumed_from == 0
    assert sorted(p.name for p in inbox.iterdir()) == ["copy.bin", "report.bin"]
