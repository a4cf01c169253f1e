"""A stream's receiver over a real loopback SOCKS5 connection batches its
reads (``SO_RCVLOWAT``) only while the stream comes in fast: a bulk stream
is read in large pieces, a live one as it comes, and a message after a
bulk burst is not held back once the stream slowed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys

import pytest

from xfer.aio import stdio
from xfer.aio import stream as stream_module
from xfer.aio.socks5 import Socks5Stream
from xfer.aio.stream import READ_BATCH, StreamProgress, receive_stream, stream_sealer
from xfer.aio.tcp import TcpConnection, open_tcp
from xfer.transfer.offer import TransferDigest, TransferOffer

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_RCVLOWAT as Linux has it"
)

KEY = bytes(range(32))
MiB = 1 << 20


def offer() -> TransferOffer:
    return TransferOffer.stream(
        transfer_id=b"\x01" * 16, salt=b"\x07" * 32, suite=1, chunk_size=65536, name="s"
    )


async def pair() -> tuple[TcpConnection, Socks5Stream, asyncio.Server]:
    """A loopback connection: the sender's end, and the receiver's stream."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[TcpConnection] = loop.create_future()
    server = await loop.create_server(
        lambda: TcpConnection(on_made=accepted.set_result), "127.0.0.1", 0
    )
    client = await open_tcp("127.0.0.1", server.sockets[0].getsockname()[1])
    client.enlarge()
    far = await accepted
    return (
        client,
        Socks5Stream(peer="p", sid="s", connection=far, streamhost="h"),
        server,
    )


def lowat(stream: Socks5Stream) -> int:
    """The receiving socket's readable mark, as the kernel has it."""
    sock = stream._connection.transport.get_extra_info("socket")
    mark: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
    return mark


class Receiver:
    """receive_stream into a list, noting the socket's mark at each piece."""

    def __init__(self, stream: Socks5Stream, data: bytes) -> None:
        self.stream = stream
        self.out: list[bytes] = []
        self.marks: list[int] = []
        self.got = asyncio.Event()

        async def sink(piece: bytes) -> None:
            self.out.append(piece)
            self.marks.append(lowat(stream))
            self.got.set()

        async def digest() -> TransferDigest:
            return TransferDigest(
                transfer_id=b"\x01" * 16,
                sha256=hashlib.sha256(data).digest(),
                size=len(data),
            )

        self.task = asyncio.ensure_future(
            receive_stream(
                stream, KEY, offer(), sink, state=StreamProgress(), digest=digest
            )
        )

    async def until(self, size: int) -> None:
        """Wait until ``size`` plaintext bytes were delivered."""
        async with asyncio.timeout(30):
            while sum(map(len, self.out)) < size:
                self.got.clear()
                await self.got.wait()


async def test_a_fast_stream_is_batched_and_a_message_after_it_is_not_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any rate counts as fast here: a loaded machine must not decide it.
    monkeypatch.setattr(stdio, "BULK_RATE", 1.0)
    monkeypatch.setattr(stdio, "RATE_WINDOW", 0.0)
    # A waiting batched read gets what came after this long: longer than
    # the pause below, so the mark seen then is the one the reader set.
    monkeypatch.setattr(stream_module, "READ_FLUSH", 0.5)
    bulk, message = os.urandom(24 * MiB), b"a line of a log\n"
    client, stream, server = await pair()
    async with server:
        receiver = Receiver(stream, bulk + message)
        sealer = stream_sealer(KEY, offer())
        wire = memoryview(sealer.update(bulk) + sealer.flush())
        for i in range(0, len(wire), 64 * 1024):
            await client.write(wire[i : i + 64 * 1024])
        await receiver.until(len(bulk))
        assert READ_BATCH in receiver.marks  # the bulk was read batched
        # The stream slows: one short message, nothing after it for now.
        await client.write(sealer.update(message) + sealer.flush())
        await receiver.until(len(bulk) + len(message))
        assert b"".join(receiver.out)[len(bulk) :] == message
        # Batching is off again: the next message is read as it comes.
        await asyncio.sleep(0.05)
        assert lowat(stream) == 1
        await client.write(sealer.finalize())
        client.close()
        async with asyncio.timeout(30):
            await receiver.task
        stream.abort()
    assert b"".join(receiver.out) == bulk + message


async def test_a_live_stream_is_read_as_it_comes() -> None:
    messages = [b"message %d\n" % i for i in range(30)]
    client, stream, server = await pair()
    async with server:
        receiver = Receiver(stream, b"".join(messages))
        sealer = stream_sealer(KEY, offer())
        sent = 0
        for m in messages:
            await client.write(sealer.update(m) + sealer.flush())
            sent += len(m)
            await receiver.until(sent)
            await asyncio.sleep(0.005)
        await client.write(sealer.finalize())
        client.close()
        async with asyncio.timeout(30):
            await receiver.task
        stream.abort()
    assert b"".join(receiver.out) == b"".join(messages)
    assert set(receiver.marks) == {1}
