"""Stall detection by progress (xfer.aio.stall), and the sealed pump over a
slow and a stalled real TCP link (a throttled FaultProxy)."""

from __future__ import annotations

import asyncio
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
from xfer.testing.faults import FaultProxy

TIMEOUT = 0.4


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
    # Five times the timeout, with progress every quarter of it.
    await stalling(tick(counter, TIMEOUT / 4, 20), TIMEOUT, counter.moved, "stalled")
    assert loop.time() - start >= 4 * TIMEOUT
    assert counter.value == 20


async def test_a_wait_that_stops_moving_fails_after_the_timeout() -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()

    async def moves_then_hangs() -> None:
        await tick(counter, TIMEOUT / 4, 8)  # 2 timeouts of progress
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


class Sink:
    """A loopback server that reads everything sent to it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while piece := await reader.read(65536):
            self.received += piece
        writer.close()
        self.done.set()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    s = Sink()
    s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    yield s, s.server.sockets[0].getsockname()[1]
    s.server.close()
    await s.server.wait_closed()


async def slow_stream(port: int, rate: float) -> tuple[Socks5Stream, FaultProxy]:
    proxy = FaultProxy("127.0.0.1", port)
    await proxy.start()
    proxy.throttle(rate)
    connection = await open_tcp(proxy.host, proxy.port)
    # A small send buffer, so that the slow link shows at our end at once
    # (not after the kernel has taken megabytes).
    sock = connection.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    stream = Socks5Stream(
        peer="b@x/1", sid="s", connection=connection, streamhost="proxy"
    )
    return stream, proxy


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
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    target, port = sink
    # One write slice takes about four stall timeouts on this link: timed
    # per write, it would fail; timed by progress, it goes through.
    rate = WRITE_SLICE / (4 * 0.5)
    size = 2 * WRITE_SLICE
    src = tmp_path / "f"
    data = os.urandom(size)
    src.write_bytes(data)
    stream, proxy = await slow_stream(port, rate)
    sealer, again = sealers(size)
    try:
        sent = await asyncio.wait_for(
            send_sealed(src, stream, sealer, total=size, stall_timeout=0.5), 60
        )
        await asyncio.wait_for(target.done.wait(), 30)
    finally:
        stream.abort()
        await proxy.stop()
    assert len(target.received) == sent > size
    assert target.received == again.update(data) + again.finalize()


async def test_a_stalled_link_still_fails_within_about_the_timeout(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    _, port = sink
    size = 8 * WRITE_SLICE
    src = tmp_path / "f"
    src.write_bytes(os.urandom(size))
    stream, proxy = await slow_stream(port, 200_000)
    sealer, _ = sealers(size)
    loop = asyncio.get_running_loop()
    proxy.stall_forever()
    start = loop.time()
    try:
        with pytest.raises(TransferTimeout, match="took no data for 1 s"):
            await asyncio.wait_for(
                send_sealed(src, stream, sealer, total=size, stall_timeout=1.0), 60
            )
    finally:
        stream.abort()
        await proxy.stop()
    # Well before the 60 s cap: the stall timeout (plus its checks) fired.
    assert loop.time() - start < 15
