"""TcpConnection over real loopback sockets: order, ends, breaks, backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from xfer.aio.tcp import (
    BATCH,
    BUFFER_SIZE,
    INITIAL_SIZE,
    READ_PIECE,
    TcpConnection,
    open_tcp,
)

MiB = 1 << 20


async def pair() -> tuple[TcpConnection, TcpConnection, asyncio.Server]:
    """A connected (client, server side) pair on loopback."""
    accepted: asyncio.Future[TcpConnection] = asyncio.get_running_loop().create_future()
    server = await asyncio.get_running_loop().create_server(
        lambda: TcpConnection(on_made=accepted.set_result), "127.0.0.1", 0
    )
    client = await open_tcp("127.0.0.1", server.sockets[0].getsockname()[1])
    far = await accepted
    client.enlarge()
    far.enlarge()
    return client, far, server


async def read_all(connection: TcpConnection, size: int = READ_PIECE) -> bytes:
    out = bytearray()
    while piece := await connection.read(size):
        assert 0 < len(piece) <= min(size, READ_PIECE)
        out += piece
    return bytes(out)


@pytest.mark.parametrize("read_size", [1, 1000, READ_PIECE, 4 * MiB])
async def test_data_arrives_whole_and_in_order(read_size):
    client, far, server = await pair()
    async with server:
        payload = os.urandom(MiB + 12345 if read_size > 1 else 200_000)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 70_001):  # not a multiple of anything
                await client.write(view[i : i + 70_001])
            client.close()

        sending = asyncio.ensure_future(send())
        received = await read_all(far, read_size)
        await sending
        far.close()
        await far.wait_closed()
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_a_reader_that_stops_makes_the_writer_wait():
    client, far, server = await pair()
    async with server:
        payload = os.urandom(MiB)
        written = 0

        async def send() -> None:
            nonlocal written
            for _ in range(64):
                await client.write(payload)
                written += len(payload)
            client.close()

        sending = asyncio.ensure_future(send())
        await asyncio.sleep(0.5)
        # The kernel's socket buffers take a few MiB, our receive buffer a
        # fixed BUFFER_SIZE; the writer is held well short of 64 MiB.
        assert not sending.done()
        held = written
        assert held < 32 * MiB
        assert 0 < far.buffered <= BUFFER_SIZE
        h = hashlib.sha256()
        total = 0
        while piece := await far.read():
            h.update(piece)
            total += len(piece)
        await sending
        far.close()
    assert total == 64 * MiB
    assert h.digest() == hashlib.sha256(payload * 64).digest()


async def test_a_reset_raises_after_the_data_that_came_first():
    client, far, server = await pair()
    async with server:
        await client.write(b"x" * 5000)
        await asyncio.sleep(0.1)  # the data is in far's buffer
        client.reset()
        got = bytearray()
        while len(got) < 5000:
            got += await far.read()
        assert got == b"x" * 5000
        with pytest.raises(ConnectionResetError):  # not b"": no orderly end
            await far.read()
        with pytest.raises(ConnectionResetError):
            await far.write(b"more")
        far.close()


async def test_a_reset_after_a_close_that_flushed_does_nothing():
    # asyncio's transport, closed with data still buffered, ends without
    # counting itself lost: aborting it later failed inside asyncio. An
    # XMPP disconnect aborts every stream it knows, closed ones included.
    client, far, server = await pair()
    async with server:
        client.transport.write(b"y" * (8 * MiB))  # more than the socket takes
        assert client.transport.get_write_buffer_size() > 0
        client.close()
        assert await read_all(far) == b"y" * (8 * MiB)
        await client.wait_closed()
        client.reset()
        client.abort()
        far.close()


async def test_a_half_closed_connection_can_still_answer():
    client, far, server = await pair()
    async with server:
        await client.write(b"question")
        client.transport.write_eof()
        assert await read_all(far) == b"question"
        await far.write(b"answer")
        far.close()
        assert await read_all(client) == b"answer"
        client.close()
        await client.wait_closed()


async def test_a_cancelled_write_leaves_the_connection_usable():
    client, far, server = await pair()
    async with server:
        payload = os.urandom(8 * MiB)
        stuck = asyncio.ensure_future(client.write(payload))
        await asyncio.sleep(0.2)
        assert not stuck.done()  # nobody reads: the write waits for room
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        # The cancelled write's data is already queued; a later write waits
        # again, and everything arrives once the far side reads.
        later = asyncio.ensure_future(client.write(b"end"))
        received = bytearray()
        while len(received) < len(payload) + 3:
            received += await far.read()
        await later
        assert received == payload + b"end"
        client.close()
        far.close()


async def test_cancelling_one_waiting_writer_leaves_the_other_waiting():
    client, far, server = await pair()
    async with server:
        first = asyncio.ensure_future(client.write(os.urandom(16 * MiB)))
        await asyncio.sleep(0.2)
        assert not first.done()  # nobody reads
        second = asyncio.ensure_future(client.drain())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0.1)
        assert not second.done()  # still waiting for room, not cancelled
        total = 0
        while total < 16 * MiB:
            total += len(await far.read())
        await second
        assert not second.cancelled()
        client.close()
        far.close()


async def test_a_size_below_one_is_refused():
    client, far, server = await pair()
    async with server:
        await client.write(b"abc")
        for size in (0, -1):
            with pytest.raises(ValueError, match="at least 1"):
                await far.read(size)
        assert await far.read() == b"abc"
        client.close()
        far.close()


async def test_two_readers_at_once_are_refused():
    client, far, server = await pair()
    async with server:
        first = asyncio.ensure_future(far.read())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already reading"):
            await far.read()
        await client.write(b"a")
        assert await first == b"a"
        client.close()
        far.close()


async def test_a_closed_connection_refuses_writes():
    client, far, server = await pair()
    async with server:
        client.close()
        with pytest.raises(ConnectionResetError):
            await client.write(b"late")
        assert await far.read() == b""
        far.close()


async def test_a_new_connection_holds_little_until_enlarged():
    accepted: asyncio.Future[TcpConnection] = asyncio.get_running_loop().create_future()
    server = await asyncio.get_running_loop().create_server(
        lambda: TcpConnection(on_made=accepted.set_result), "127.0.0.1", 0
    )
    async with server:
        client = await open_tcp("127.0.0.1", server.sockets[0].getsockname()[1])
        far = await accepted
        payload = os.urandom(4 * MiB)
        sending = asyncio.ensure_future(client.write(payload))
        await asyncio.sleep(0.3)
        # Nobody reads: a connection that never finished its handshake holds
        # a few KiB, not a bulk buffer.
        assert 0 < far.buffered <= INITIAL_SIZE
        first = await far.read(10)
        far.enlarge()
        assert far.buffered < BUFFER_SIZE
        rest = await read_exactly(far, len(payload) - len(first))
        await sending
        assert first + rest == payload
        client.close()
        far.close()


async def read_exactly(connection: TcpConnection, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        piece = await connection.read()
        assert piece
        out += piece
    return bytes(out)


def test_the_buffer_must_hold_a_handshake():
    with pytest.raises(ValueError, match="at least 1024"):
        TcpConnection(buffer_size=100)


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("into_size", [1, 1000, BUFFER_SIZE + 1, 4 * MiB])
async def test_readinto_copies_the_data_whole_and_in_order(into_size, batch):
    client, far, server = await pair()
    far.batch(batch)
    async with server:
        payload = os.urandom(MiB + 12345 if into_size > 1 else 50_000)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 70_001):
                await client.write(view[i : i + 70_001])
            client.close()

        sending = asyncio.ensure_future(send())
        buf = bytearray(into_size)
        received = bytearray()
        while n := await far.readinto(memoryview(buf)):
            assert 0 < n <= into_size
            received += buf[:n]
        assert await far.readinto(memoryview(buf)) == 0  # the end, again
        await sending
        far.close()
        await far.wait_closed()
    assert received == payload


async def test_readinto_an_empty_buffer_reads_nothing():
    client, far, server = await pair()
    async with server:
        await client.write(b"abc")
        assert await far.readinto(memoryview(bytearray())) == 0
        buf = bytearray(10)
        assert await far.readinto(memoryview(buf)) == 3
        assert buf[:3] == b"abc"
        client.close()
        far.close()


async def test_readinto_raises_after_the_data_that_came_first():
    client, far, server = await pair()
    async with server:
        await client.write(b"x" * 5000)
        await asyncio.sleep(0.1)
        client.reset()
        buf = bytearray(8000)
        got = 0
        while got < 5000:
            got += await far.readinto(memoryview(buf)[got:])
        assert buf[:5000] == b"x" * 5000
        with pytest.raises(ConnectionResetError):
            await far.readinto(memoryview(buf))
        far.close()


async def test_reads_and_readinto_mixed_keep_the_order():
    """readinto lands straight in the caller's buffer when nothing is
    buffered, read takes from the connection's own: interleaved, the bytes
    still come whole and in order."""
    client, far, server = await pair()
    far.batch()
    async with server:
        payload = os.urandom(3 * MiB + 17)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 50_001):
                await client.write(view[i : i + 50_001])
                await asyncio.sleep(0)
            client.close()

        sending = asyncio.ensure_future(send())
        received = bytearray()
        buf = bytearray(MiB)
        for turn in range(10**6):
            if turn % 3 == 2:
                piece = await far.read(READ_PIECE)
                if not piece:
                    break
                received += piece
            else:
                n = await far.readinto(memoryview(buf))
                if not n:
                    break
                received += buf[:n]
        await sending
        far.close()
    assert received == payload


async def test_a_batched_reader_still_gets_a_trickle():
    """Bytes below the batch mark, with no end after them, are not held back
    for good: a waiting reader gets them after a short flush delay."""
    client, far, server = await pair()
    far.batch(BATCH)
    async with server:
        await client.write(b"0123456789")
        buf = bytearray(BATCH * 2)
        async with asyncio.timeout(30):
            assert await far.readinto(memoryview(buf)) == 10
            assert buf[:10] == b"0123456789"
            await client.write(b"more")
            assert await far.readinto(memoryview(buf)) == 4
            client.close()
            assert await far.readinto(memoryview(buf)) == 0
        far.close()


async def test_a_batched_reader_is_woken_for_large_reads():
    """A sender that writes 4 KiB at a time (as a relay forwards them): the
    batched reader takes them in a few large reads, not one per piece."""
    client, far, server = await pair()
    far.batch(64 * 1024)
    async with server:
        payload = os.urandom(256 * 4096)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 4096):
                await client.write(view[i : i + 4096])
                await asyncio.sleep(0)  # the reader could run between pieces
            client.close()

        sending = asyncio.ensure_future(send())
        buf = bytearray(MiB)
        received = bytearray()
        reads = 0
        while n := await far.readinto(memoryview(buf)):
            received += buf[:n]
            reads += 1
        await sending
        far.close()
    assert received == payload
    assert reads <= 64  # unbatched, about one read per 4 KiB piece (256)
