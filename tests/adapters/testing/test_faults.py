"""The fault-injection proxy (xfer.testing.faults) over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from xfer.testing.faults import FaultProxy
from xfer.testing.transports import closed_port

#: Generous: the machine may be loaded. No test waits this long when it passes.
TIMEOUT = 30.0
#: How long a test watches for data that must not arrive (during a stall).
QUIET = 0.3
MIB = 1024 * 1024

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, TIMEOUT)


@pytest.fixture(autouse=True)
def _collect_garbage():
    # An unclosed transport warns when it is collected: make that happen here,
    # inside the test that leaked it (filterwarnings=error turns it into a failure).
    yield
    gc.collect()


class Target:
    """A loopback server running ``handler`` per connection; tracks its tasks."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.received = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.finished()
        await self.server.wait_closed()

    async def finished(self) -> None:
        """Wait for every handler to return."""
        if self.tasks:
            await within(asyncio.gather(*self.tasks))

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.accepted += 1
        self.writers.append(writer)
        task = asyncio.get_running_loop().create_task(self._run(reader, writer))
        self.tasks.add(task)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            await self.handler(reader, writer)
        except OSError:
            pass
        finally:
            await close(writer)

    async def receive_all(self, reader: asyncio.StreamReader) -> None:
        """Record everything until EOF (or a reset)."""
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(65536):
                self.received += data


def echo(target_received: bytearray | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while data := await reader.read(65536):
            if target_received is not None:
                target_received.extend(data)
            writer.write(data)
            await writer.drain()

    return handle


def send(payload: bytes) -> Handler:
    """Send ``payload``, then close, ignoring what the client sends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writer.write(payload)
        await writer.drain()

    return handle


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (up to TIMEOUT) for ``condition`` to hold."""
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def connect(proxy: FaultProxy):
    return await within(asyncio.open_connection(proxy.host, proxy.port))


async def read_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """Everything until the connection ends, and whether it ended in a reset."""
    data = bytearray()
    try:
        while chunk := await within(reader.read(65536)):
            data += chunk
    except ConnectionResetError:
        return bytes(data), True
    return bytes(data), False


async def send_all(writer: asyncio.StreamWriter, payload: bytes) -> bool:
    """Write ``payload`` then EOF; False if the connection broke meanwhile."""
    try:
        for i in range(0, len(payload), 65536):
            writer.write(payload[i : i + 65536])
            await writer.drain()
        writer.write_eof()
    except OSError:
        return False
    return True


async def roundtrip(reader, writer, message: bytes = b"ping") -> None:
    writer.write(message)
    await within(writer.drain())
    assert await within(reader.readexactly(len(message))) == message


# -- passing data through -----------------------------------------------------


async def test_data_passes_through_unchanged_both_ways():
    down = os.urandom(MIB)
    up = os.urandom(MIB)

    async def handle(reader, writer):
        async with asyncio.TaskGroup() as group:
            group.create_task(target.receive_all(reader))
            group.create_task(send_all(writer, down))

    async with Target(handle) as target, FaultProxy("127.0.0.1", target.port) as proxy:
        assert proxy.host == "127.0.0.1"
        reader, writer = await connect(proxy)
        sending = asyncio.create_task(send_all(writer, up))
        received, reset = await read_until_closed(reader)
        assert await within(sending)
        await target.finished()
        await close(writer)

        assert not reset
        assert hashlib.sha256(received).digest() == hashlib.sha256(down).digest()
        assert hashlib.sha256(target.received).digest() == hashlib.sha256(up).digest()
        assert proxy.connections == 1
        assert proxy.bytes_relayed == 2 * MIB
        assert proxy.cuts == 0


async def test_concurrent_connections_are_kept_apart():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):

        async def one() -> None:
            payload = os.urandom(256 * 1024)
            reader, writer = await connect(proxy)
            sending = asyncio.create_task(send_all(writer, payload))
            received, reset = await read_until_closed(reader)
            assert await within(sending)
            await close(writer)
            assert (received, reset) == (payload, False)

        await within(asyncio.gather(*(one() for _ in range(4))))
        assert proxy.connections == 4
        assert proxy.bytes_relayed == 4 * 2 * 256 * 1024


async def test_an_unreachable_target_closes_the_connection():
    async with FaultProxy("127.0.0.1", closed_port()) as proxy:
        reader, writer = await connect(proxy)
        assert (await read_until_closed(reader))[0] == b""
        await close(writer)
        assert proxy.connections == 1
        assert proxy.cuts == 0


# -- cuts ---------------------------------------------------------------------


async def test_cut_after_down_forwards_exactly_n_bytes_then_cuts():
    payload = os.urandom(MIB)
    n = 100_000
    async with (
        Target(send(payload)) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.cut_after(n, direction="down")
        reader, writer = await connect(proxy)
        received, _ = await read_until_closed(reader)
        await close(writer)

        assert len(received) <= n
        assert received == payload[: len(received)]
        assert len(received) == n  # nothing was left in the proxy's buffers
        assert proxy.cuts == 1


async def test_a_graceful_cut_delivers_every_byte_then_an_end_of_stream():
    payload = os.urandom(MIB)
    n = 300_001
    async with (
        Target(send(payload)) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.cut_after(n, direction="down", graceful=True)
        reader, writer = await connect(proxy)
        # Read slowly: a reset would drop what the kernel still holds for
        # us; an end of stream comes only after all of it.
        await asyncio.sleep(0.3)
        received, reset = await read_until_closed(reader)
        await close(writer)

        assert received == payload[:n]
        assert not reset
        assert proxy.cuts == 1


async def test_cut_after_up_forwards_at_most_n_bytes_then_cuts():
    payload = os.urandom(MIB)
    n = 300_000

    async def handle(reader, writer):
        await target.receive_all(reader)

    async with Target(handle) as target, FaultProxy("127.0.0.1", target.port) as proxy:
        proxy.cut_after(n, direction="up")
        reader, writer = await connect(proxy)
        sending = asyncio.create_task(send_all(writer, payload))
        received, _ = await read_until_closed(reader)
        await within(sending)  # ends early (the connection broke) or not
        await target.finished()
        await close(writer)

        assert received == b""
        assert len(target.received) <= n
        assert target.received == payload[: len(target.received)]
        assert proxy.cuts == 1


async def test_cut_after_counts_both_directions_together():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.cut_after(3000)
        reader, writer = await connect(proxy)
        writer.write(os.urandom(2000))
        received, _ = await read_until_closed(reader)
        await close(writer)

        assert len(received) <= 2000
        assert proxy.bytes_relayed == 3000
        assert proxy.cuts == 1


async def test_a_cut_rule_is_spent_on_the_first_connection_that_reaches_it():
    payload = os.urandom(5000)
    async with (
        Target(send(payload)) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.cut_after(1000, direction="down")
        for expected in (payload[:1000], payload):
            reader, writer = await connect(proxy)
            received, _ = await read_until_closed(reader)
            await close(writer)
            assert len(received) <= len(expected)
            assert expected.startswith(received)
        assert received == payload
        assert proxy.cuts == 1


async def test_cut_after_counts_from_when_it_is_armed_on_live_connections():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer, b"x" * 5000)
        proxy.cut_after(100, direction="up")
        await roundtrip(reader, writer, b"y" * 100)
        assert proxy.cuts == 0
        writer.write(b"z")
        received, _ = await read_until_closed(reader)
        await close(writer)
        assert received == b""
        assert proxy.cuts == 1


async def test_cut_randomly_is_seeded_and_cuts_within_the_bound():
    payload = os.urandom(100_000)
    async with (
        Target(send(payload)) as target,
        FaultProxy("127.0.0.1", target.port, seed=7) as proxy,
    ):
        n = proxy.cut_randomly(50_000, direction="down")
        assert n == FaultProxy("127.0.0.1", 1, seed=7).cut_randomly(50_000)
        assert 1 <= n <= 50_000
        reader, writer = await connect(proxy)
        received, _ = await read_until_closed(reader)
        await close(writer)
        assert len(received) <= n
        assert received == payload[: len(received)]
        assert proxy.cuts == 1


async def test_cut_all_aborts_every_live_connection():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        clients = [await connect(proxy) for _ in range(3)]
        for reader, writer in clients:
            await roundtrip(reader, writer)

        assert proxy.cut_all() == 3

        for reader, writer in clients:
            assert (await read_until_closed(reader))[0] == b""
            await close(writer)
        assert proxy.cuts == 3
        await target.finished()  # the target saw its side cut too
        # Later connections are not affected.
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)
        await close(writer)
        await eventually(lambda: proxy.live == 0)
        assert proxy.cut_all() == 0  # nothing live any more
        assert proxy.cuts == 3


def test_bad_arguments_are_refused():
    proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError, match="direction"):
        proxy.cut_after(10, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        proxy.cut_after(-1)
    with pytest.raises(ValueError, match="at least 1"):
        proxy.cut_randomly(0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.port


# -- stalls -------------------------------------------------------------------


async def assert_nothing_arrives(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET)


async def test_a_stall_holds_data_until_resume():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)

        proxy.stall_forever()
        assert proxy.stalled
        writer.write(b"held back")
        await assert_nothing_arrives(reader)
        proxy.resume()

        assert await within(reader.readexactly(9)) == b"held back"
        await close(writer)


async def test_a_stall_holds_a_large_transfer_on_a_new_connection_without_loss():
    payload = os.urandom(MIB)
    seen_by_target = bytearray()
    async with (
        Target(echo(seen_by_target)) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.stall_forever()
        reader, writer = await connect(proxy)
        sending = asyncio.create_task(send_all(writer, payload))
        await assert_nothing_arrives(reader)
        assert seen_by_target == b""
        assert proxy.bytes_relayed == 0

        proxy.resume()
        received, reset = await read_until_closed(reader)
        assert await within(sending)
        await close(writer)
        assert not reset
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_a_timed_stall_ends_by_itself():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)

        proxy.stall(QUIET)
        assert proxy.stalled
        writer.write(b"late")
        assert await within(reader.readexactly(4)) == b"late"
        assert not proxy.stalled  # it arrived only once the stall was over
        await close(writer)


async def test_cut_all_during_a_stall_does_not_wait_for_resume():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)
        proxy.stall_forever()
        writer.write(b"never")
        await assert_nothing_arrives(reader)

        assert proxy.cut_all() == 1
        assert (await read_until_closed(reader))[0] == b""
        await close(writer)
        await target.finished()


# -- refusing -----------------------------------------------------------------


async def test_refuse_closes_new_connections_until_turned_off():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.refuse(True)
        reader, writer = await connect(proxy)
        assert (await read_until_closed(reader))[0] == b""
        await close(writer)
        assert target.accepted == 0

        proxy.refuse(False)
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)
        await close(writer)
        assert target.accepted == 1
        assert proxy.connections == 2
        assert proxy.cuts == 0


# -- stopping -----------------------------------------------------------------


async def test_stop_with_live_connections_leaves_nothing_running():
    async with Target(echo()) as target:
        proxy = FaultProxy("127.0.0.1", target.port)
        await proxy.start()
        # One idle connection, one blocked on backpressure (the client does not
        # read the echo), one held by a stall.
        idle = await connect(proxy)
        await roundtrip(*idle)
        blocked = await connect(proxy)
        await roundtrip(*blocked)
        flooding = asyncio.create_task(send_all(blocked[1], os.urandom(8 * MIB)))
        proxy.stall_forever()
        held = await connect(proxy)
        held[1].write(b"held")
        await asyncio.sleep(QUIET)
        assert proxy.live == 3

        await within(asyncio.gather(proxy.stop(), proxy.stop()))
        await within(proxy.stop())

        assert proxy.live == 0
        for reader, writer in (idle, blocked, held):
            await read_until_closed(reader)
            await close(writer)
        await within(flooding)
        await target.finished()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        # It no longer listens.
        with pytest.raises(ConnectionRefusedError):
            await within(asyncio.open_connection("127.0.0.1", proxy.port))


async def test_stop_is_idempotent_and_harmless_before_start():
    proxy = FaultProxy("127.0.0.1", 1)
    await proxy.stop()
    async with proxy:
        pass
    await proxy.stop()
    assert proxy.connections == 0


# -- throttling ---------------------------------------------------------------


async def test_a_throttled_connection_is_paced_and_loses_nothing():
    payload = os.urandom(96 * 1024)
    rate = 128 * 1024
    async with (
        Target(send(payload)) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.throttle(rate)
        assert proxy.rate == rate
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await connect(proxy)
        received, reset = await read_until_closed(reader)
        took = loop.time() - start
        await close(writer)
    assert not reset
    assert received == payload
    # Paced: the bytes cannot have come faster than the rate allows (a
    # lower bound, whatever the machine's load; the first slice goes at once).
    assert took >= (len(payload) - 2048) / rate


async def test_throttling_can_be_lifted_on_a_live_connection():
    async with (
        Target(echo()) as target,
        FaultProxy("127.0.0.1", target.port) as proxy,
    ):
        proxy.throttle(1024)  # 1 KiB/s: 64 KiB would take a minute
        reader, writer = await connect(proxy)
        await roundtrip(reader, writer)
        proxy.throttle(None)
        await roundtrip(reader, writer, os.urandom(64 * 1024))
        await close(writer)


def test_a_rate_must_be_positive():
    proxy = FaultProxy("127.0.0.1", 1)
    for bad in (0, -5.0):
        with pytest.raises(ValueError, match="positive"):
            proxy.throttle(bad)
