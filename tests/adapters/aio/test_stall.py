"""Stall detection by progress (xfer.aio.stall), and the sealed pump over a
slow and a stalled real TCP link (a throttled FaultProxy)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import make_offer
from xfer.aio.pump import WRITE_SLICE, send_sealed
from xfer.aio.socks5 import Socks5Stream
from xfer.aio.stall import moved_counter, stalling
from xfer.aio.tcp import open_tcp
from xfer.envelope import Sealer
from xfer.errors import TransferTimeout

#: Long enough that the event loop stalling for a moment (four test workers
#: on two cores) is not taken for the counter standing still: a tick every
#: TIMEOUT / 10, a check every TIMEOUT / 4, so only a pause of the whole
#: process of over half of TIMEOUT could look like a stall.
TIMEOUT = 1.0


class Counter:
    """A progress count some background task moves (or not)."""

    def __init__(self) -> None:
        self.value = 0

    def moved(self) -> int:
        return self.value


async def tick(counter: Counter, every: float, times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(every)
        counter.value += 1


async def test_a_wait_that_keeps_moving_outlasts_the_timeout() -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()
    start = loop.time()
    # Three times the timeout, with progress every tenth of it.
    await stalling(tick(counter, TIMEOUT / 10, 30), TIMEOUT, counter.moved, "stalled")
    assert loop.time() - start >= 3 * TIMEOUT
    assert counter.value == 30


async def test_a_wait_that_stops_moving_fails_after_the_timeout() -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()

    async def moves_then_hangs() -> None:
        await tick(counter, TIMEOUT / 10, 20)  # 2 timeouts of progress
        await asyncio.Event().wait()

    start = loop.time()
    with pytest.raises(TransferTimeout, match="stalled"):
        await stalling(moves_then_hangs(), TIMEOUT, counter.moved, "stalled")
    took = loop.time() - start
    # Not before a whole timeout after the last move; the checks come four
    # times per timeout (and the machine may be slow: no upper bound here
    # beyond the generous one below).
    assert took >= 2 * TIMEOUT + TIMEOUT
    assert took < 2 * TIMEOUT + 10 * TIMEOUT


async def test_without_a_counter_the_whole_wait_is_timed() -> None:
    with pytest.raises(TransferTimeout, match="slow"):
        await stalling(asyncio.sleep(10 * TIMEOUT), TIMEOUT, None, "slow")


async def test_no_timeout_waits_and_returns_the_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await stalling(answer(), None, None, "x") == 42
    assert await stalling(answer(), TIMEOUT, Counter().moved, "x") == 42


def test_moved_counter_is_the_streams_method_if_any() -> None:
    counter = Counter()
    assert moved_counter(counter) == counter.moved
    assert moved_counter(object()) is None


# -- the sealed pump over a real, slow TCP link --------------------------------
#
# The peer is a loopback socket with a small kernel receive buffer that reads
# at a set pace (or not at all): TCP's own flow control makes the sender feel
# it within a few KiB, as on a slow link.


class SlowPeer:
    """Accepts one connection and reads it at ``rate`` bytes/s (0: never)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.received = bytearray()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.listener)
        try:
            if not self.rate:
                await asyncio.Event().wait()
            while piece := await loop.sock_recv(conn, 2048):
                self.received += piece
                await asyncio.sleep(len(piece) / self.rate)
        finally:
            conn.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[SlowPeer]]:
    made: list[SlowPeer] = []
    yield made
    for peer in made:
        if peer.task is not None:
            peer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer.task
        peer.listener.close()


async def stream_to(
    peers: list[SlowPeer], rate: float
) -> tuple[Socks5Stream, SlowPeer]:
    peer = SlowPeer(rate)
    peers.append(peer)
    peer.task = asyncio.ensure_future(peer.run())
    connection = await open_tcp("127.0.0.1", peer.port)
    sock = connection.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    stream = Socks5Stream(
        peer="b@x/1", sid="s", connection=connection, streamhost="peer"
    )
    return stream, peer


def sealers(size: int) -> tuple[Sealer, Sealer]:
    """Two sealers under one key: the same plaintext seals the same."""
    key = os.urandom(32)
    offer = make_offer(chunk_size=4096, size=size, sha256=b"\0" * 32, name="f")
    one, two = (
        Sealer.announced(
            key, salt=offer.salt, transfer_id=offer.transfer_id, chunk_size=4096
        )
        for _ in range(2)
    )
    return one, two


async def test_a_slow_link_that_keeps_moving_is_not_a_stall(
    tmp_path: Path, peers: list[SlowPeer]
) -> None:
    # About 100 kB/s: one write slice takes over two seconds, twice the
    # stall timeout. Timed per write, it would fail; timed by progress, it
    # goes through. (The peer reads in this process: a stall timeout much
    # shorter would take a pause of the loaded machine for a stall.)
    size = 2 * WRITE_SLICE
    src = tmp_path / "f"
    data = os.urandom(size)
    src.write_bytes(data)
    stream, peer = await stream_to(peers, 100_000)
    sealer, again = sealers(size)
    done: list[int] = []
    sent = await asyncio.wait_for(
        send_sealed(
            src,
            stream,
            sealer,
            total=size,
            stall_timeout=1.0,
            progress=lambda d, _t: done.append(d),
        ),
        60,
    )
    assert peer.task is not None
    await asyncio.wait_for(peer.task, 30)
    assert peer.received == again.update(data) + again.finalize()
    assert len(peer.received) == sent > size
    # Progress came with the link, slice by slice (smaller ones once the
    # link showed slow), not all at once when the writes were queued.
    assert done == sorted(done)
    assert len(set(done)) > 4
    assert done[-1] == size


async def test_a_stalled_link_still_fails_within_about_the_timeout(
    tmp_path: Path, peers: list[SlowPeer]
) -> None:
    size = 8 * WRITE_SLICE
    src = tmp_path / "f"
    src.write_bytes(os.urandom(size))
    stream, _ = await stream_to(peers, 0)  # never reads
    sealer, _ = sealers(size)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        with pytest.raises(TransferTimeout, match=r"took no data for 0\.6 s"):
            await asyncio.wait_for(
                send_sealed(src, stream, sealer, total=size, stall_timeout=0.6), 60
            )
    finally:
        stream.abort()
    # Well before the 60 s cap: the stall timeout (plus its checks) fired.
    assert loop.time() - start < 15
