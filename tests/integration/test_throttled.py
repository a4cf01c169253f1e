"""Transfers through a throttled server, as Debian ships Prosody (mod_limits
on c2s) or ejabberd (its shaper), and over a slow link (a throttled
FaultProxy), including breaks and stalls on it.

The server reads each client's stream at 16 kB/s. IBB then carries a few
hundred KiB in a quarter of a minute: the stall timeout (short here) sees
the bytes move, not a write that takes long; the sender paces its IBB
window to what is acknowledged, so the stream's other stanzas are not
queued behind minutes of data; progress keeps pace with what arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, introduce, transfer_client
from tests.integration.test_resume import proxied_streamhost, send_and_receive
from xfer.errors import TransferTimeout, XferError
from xfer.testing.faults import FaultProxy
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import SendResult

pytestmark = pytest.mark.integration

KiB = 1024
#: What the server lets each client send, and its burst, as mod_limits
#: writes them.
RATE, BURST = "16kb/s", "1s"
#: Short: a write of 256 KiB takes 20 s at this rate, so a stall timeout that
#: timed whole writes would fail the transfer.
STALL = 6.0
#: Transports off: IBB only.
IBB_ONLY: dict[str, object] = {"socks5_direct": False, "socks5_proxy": False}


@pytest.fixture(scope="module")
def limited() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    with LocalProsody(accounts=dict(ACCOUNTS), c2s_rate=RATE, c2s_burst=BURST) as s:
        yield s


async def ibb_pair(
    server: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> tuple[XferClient, XferClient]:
    # 16 KiB chunks: the receiver verifies (and so shows) whole chunks, one
    # a second at this rate (the default 64 KiB would be one in four).
    settings = {
        **IBB_ONLY,
        "stall_timeout": STALL,
        "resume_attempts": 0,
        "chunk_size": 16 * KiB,
    }
    a = await transfer_client(server, "alice", "a", tmp_path / "a-id", **settings)
    clients.append(a)
    b = await transfer_client(server, "bob", "b", tmp_path / "b-id", **settings)
    clients.append(b)
    introduce(a, b)
    return a, b


async def test_ibb_through_a_rate_limited_server_completes_with_honest_progress(
    limited: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await ibb_pair(limited, tmp_path, clients)
    size = 200 * KiB
    src = tmp_path / "f.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    loop = asyncio.get_running_loop()
    received: list[tuple[float, int]] = []
    sent: list[tuple[float, int]] = []

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(
            inbox, progress=lambda d, _t: received.append((loop.time(), d))
        )

    got, result = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            a.plugin["xfer_transfer"].send_file(
                b.boundjid.full,
                src,
                progress=lambda d, _t: sent.append((loop.time(), d)),
            ),
        ),
        120,
    )
    assert isinstance(result, SendResult)
    assert result.transport == "ibb"
    assert result.breaks == 0
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    # The server really held the sender back: the sealed data, base64 in
    # IBB packets, cannot have gone faster than the limit and its burst.
    wire = result.sealed_size * 4 / 3
    assert result.seconds > wire / 16000 - 1.0 - 2
    print(
        f"\n{size} B through {RATE}: {result.seconds:.1f} s "
        f"({size / result.seconds / 1000:.1f} kB/s of file)"
    )

    # The receiver's progress: verified bytes only, in many steps as they
    # came (an ETA from the first of them is finite), never past the size.
    done = [d for _, d in received]
    assert done == sorted(done)
    assert done[-1] == size
    assert len(set(done)) >= 5
    first_time, first = next((t, d) for t, d in received if d > 0)
    assert first < size / 2  # the first figure came early, not at the end
    # The sender's progress keeps pace with the link: it does not claim
    # the file long before the receiver has verified most of it.
    half_sent = next(t for t, d in sent if d >= size / 2)
    half_verified = next(t for t, d in received if d >= size / 2)
    assert half_sent > first_time
    assert half_verified - half_sent < result.seconds / 2


# -- a slow and a stalled link between the sender and its server ---------------


async def slow_pair(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
    rate: float,
    stall: float,
) -> tuple[XferClient, XferClient, FaultProxy]:
    """alice behind a link of ``rate`` bytes/s each way (a FaultProxy in
    front of her server), bob straight to it; IBB only."""
    proxy = FaultProxy("127.0.0.1", prosody.c2s_port)
    await proxy.start()
    proxies.append(proxy)
    proxy.throttle(rate)
    settings = {**IBB_ONLY, "stall_timeout": stall, "resume_attempts": 0}
    a = await transfer_client(
        prosody, "alice", "slow", tmp_path / "a-id", via=proxy, **settings
    )
    clients.append(a)
    b = await transfer_client(prosody, "bob", "b", tmp_path / "b-id", **settings)
    clients.append(b)
    introduce(a, b)
    return a, b, proxy


async def test_ibb_over_a_slow_link_outlasts_a_short_stall_timeout(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    # 40 kB/s and a stall timeout of 3 s. The file is more than one window
    # (256 KiB): a write of 256 KiB then waits for acknowledgements that
    # take 9 s to come, which a stall timeout that timed writes would fail.
    a, b, _ = await slow_pair(prosody, tmp_path, clients, proxies, 40_000, 3.0)
    size = 320 * KiB
    src = tmp_path / "f.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    got, result = await asyncio.wait_for(
        asyncio.gather(
            receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
        ),
        120,
    )
    assert result.transport == "ibb"
    assert result.breaks == 0
    assert got.read_bytes() == data
    print(f"\n{size} B over 40 kB/s: {result.seconds:.1f} s")


async def test_ibb_over_a_stalled_link_fails_within_the_stall_timeout(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    a, b, proxy = await slow_pair(prosody, tmp_path, clients, proxies, 20_000, 2.0)
    size = 400 * KiB
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(size))
    inbox = tmp_path / "in"
    inbox.mkdir()
    loop = asyncio.get_running_loop()
    stalled_at: list[float] = []

    def stall_once_moving(done: int, _total: int | None) -> None:
        if done and not stalled_at:
            proxy.stall_forever()  # the link goes quiet, nothing is cut
            stalled_at.append(loop.time())

    async def receive() -> None:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        # The receiver's own stall timeout: not IBB's minute-long ones.
        with pytest.raises(TransferTimeout, match="no data came for 2 s"):
            await offer.accept(inbox, progress=stall_once_moving)

    sending = a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    results = await asyncio.wait_for(
        asyncio.gather(receive(), sending, return_exceptions=True), 120
    )
    failed_at = loop.time()
    assert results[0] is None  # the receiver failed as expected
    assert isinstance(results[1], XferError)
    assert stalled_at
    # Both detected it within about the timeout, and returned about a
    # second later (how soon: tests/integration/test_hostile_outages.py).
    assert failed_at - stalled_at[0] < 20
    proxy.resume()


# -- a break on a slow link: the resume goes on from what was verified ---------


async def test_a_break_on_a_slow_link_resumes_after_the_verified_bytes(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    # SOCKS5 through a fault proxy in front of alice's streamhost, paced to
    # 200 kB/s: far less than the receiver's gathered piece (1 MiB) has come
    # when the connection is reset, after 360 KiB of the sealed stream.
    a, b, proxy = await proxied_streamhost(prosody, tmp_path, clients, proxies)
    proxy.throttle(200_000)
    size = 640 * KiB
    src = tmp_path / "f.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    cut = 360 * KiB
    proxy.cut_after(cut, direction="down")
    got, result = await send_and_receive(a, b, src, inbox)
    assert proxy.cuts == 1
    assert result.breaks == 1
    assert got.read_bytes() == data
    # Every whole chunk that came before the reset was verified and kept,
    # but the last (the opener holds it until it knows it is not the final
    # one) and what the reset took from the receiver's kernel; only the
    # rest went again.
    chunk = 64 * KiB  # the default chunk size
    assert cut - 3 * chunk <= result.resumed_from < cut
    print(f"\nreset after {cut} B of the stream: resumed from {result.resumed_from}")


async def test_a_stall_on_a_slow_ibb_link_resumes_after_the_verified_bytes(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    # IBB over an 80 kB/s link; once some 300 KiB of the file went, the link
    # goes quiet for longer than the stall timeout (both sides give up),
    # then comes back, and the sender offers the rest. The receiver had
    # gathered far less than a whole piece (1 MiB): before, all of it was
    # dropped with the failed stream and the resume started from zero.
    a, b, proxy = await slow_pair(prosody, tmp_path, clients, proxies, 80_000, 2.0)
    a.plugin["xfer_transfer"].config["resume_attempts"] = 3
    b.plugin["xfer_transfer"].config["resume_attempts"] = 3
    size = 600 * KiB
    src = tmp_path / "f.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()

    def stall_midway(done: int, _total: int | None) -> None:
        if done >= 300 * KiB and not proxy.stalled and not stalled:
            proxy.stall(5.0)
            stalled.append(done)

    stalled: list[int] = []

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    got, result = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            a.plugin["xfer_transfer"].send_file(
                b.boundjid.full, src, progress=stall_midway
            ),
        ),
        120,
    )
    assert stalled
    assert got.read_bytes() == data
    assert result.breaks == 1
    assert result.transport == "ibb"
    chunk = 64 * KiB
    assert result.resumed_from >= 300 * KiB - 2 * chunk
    print(f"\nstalled after ~300 KiB: resumed from {result.resumed_from}")
