"""Streams (no size up front) between two real clients through a real Prosody:
byte for byte over each transport, the digest and the verdict on both sides,
a cut that never looks complete, and backpressure from a slow consumer."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.test_transfer import peers_forcing
from xfer.envelope import DEFAULT_CHUNK_SIZE
from xfer.errors import StreamCut
from xfer.testing.transports import KINDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from xfer.testing.prosody import LocalProsody
    from xfer.xmpp.client import XferClient
    from xfer.xmpp.transfer import XferTransfer

pytestmark = pytest.mark.integration


def plugin(client: XferClient) -> XferTransfer:
    found: XferTransfer = client.plugin["xfer_transfer"]
    return found


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_arrives_byte_for_byte_over_each_transport(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient], kind: str
) -> None:
    a, b = await peers_forcing(kind, prosody, tmp_path, clients)
    # Odd piece sizes, several chunks and a short final one.
    data = os.urandom(3 * DEFAULT_CHUNK_SIZE + 1234)
    got = bytearray()

    routes = []

    async def receive() -> tuple[int, bytes | None]:
        offer = await plugin(b).next_offer(timeout=30)
        assert offer.is_stream
        assert (offer.name, offer.size, offer.sealed_size) == ("pipe.tar", 0, None)
        stream = await offer.accept_stream()
        async for piece in stream:
            got.extend(piece)
        routes.append(stream.route)
        return stream.verified, stream.sha256

    (verified, sha256), result = await asyncio.gather(
        receive(),
        plugin(a).send_stream(b.boundjid.full, pieces(data, 7001), name="pipe.tar"),
    )
    assert bytes(got) == data
    digest = hashlib.sha256(data).digest()
    assert (verified, sha256) == (len(data), digest)
    assert (result.size, result.sha256, result.transport) == (len(data), digest, kind)
    # The receiver knows the path the stream took, as the sender does.
    assert [(r.kind, r.via) for r in routes if r is not None] == [(kind, result.via)]


async def test_an_empty_stream(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await peers_forcing("socks5-direct", prosody, tmp_path, clients)

    async def receive() -> list[bytes]:
        offer = await plugin(b).next_offer(timeout=30)
        return [p async for p in await offer.accept_stream()]

    got, result = await asyncio.gather(
        receive(), plugin(a).send_stream(b.boundjid.full, pieces(b"", 1))
    )
    assert got == []
    assert (result.size, result.sha256) == (0, hashlib.sha256().digest())


async def test_a_stream_whose_source_fails_is_cut_on_both_sides(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await peers_forcing("socks5-direct", prosody, tmp_path, clients)
    first = os.urandom(2 * DEFAULT_CHUNK_SIZE + 10)

    async def failing() -> AsyncIterator[bytes]:
        yield first
        await asyncio.sleep(0.5)  # the full chunks reach the receiver
        raise OSError("the producer died")

    got = bytearray()

    async def receive() -> None:
        offer = await plugin(b).next_offer(timeout=30)
        async for piece in await offer.accept_stream():
            got.extend(piece)

    results = await asyncio.gather(
        receive(),
        plugin(a).send_stream(b.boundjid.full, failing()),
        return_exceptions=True,
    )
    received, sent = results
    # The receiver delivered the two full chunks, verified, and no more:
    # the 10 bytes of the unfinished chunk never came out.
    assert isinstance(received, StreamCut)
    assert received.verified == 2 * DEFAULT_CHUNK_SIZE
    assert bytes(got) == first[: 2 * DEFAULT_CHUNK_SIZE]
    assert f"stream cut after {2 * DEFAULT_CHUNK_SIZE} verified bytes" in str(received)
    # The sender learns the receiver's count from its verdict inside OTR.
    assert isinstance(sent, StreamCut)
    assert (sent.verified, sent.sent) == (2 * DEFAULT_CHUNK_SIZE, len(first))


async def test_a_slow_consumer_slows_the_sender(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await peers_forcing("socks5-direct", prosody, tmp_path, clients)
    total = 48 << 20  # far more than every buffer on the way together
    read = 0
    taken = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal read
        block = os.urandom(256 * 1024)
        while read < total:
            read += len(block)
            yield block

    async def receive() -> None:
        nonlocal taken
        offer = await plugin(b).next_offer(timeout=30)
        stream = await offer.accept_stream()
        async for piece in stream:
            taken += len(piece)
            if taken < 2 << 20:
                await asyncio.sleep(0.02)  # a consumer that is slow at first
        assert stream.verified == total

    async def watch() -> int:
        # While the consumer is slow, what the sender read runs ahead of
        # what the consumer took by the buffers on the way, not by the source.
        ahead = 0
        while taken < 2 << 20:
            await asyncio.sleep(0.01)
            if taken:
                ahead = max(ahead, read - taken)
        return ahead

    ahead, _, result = await asyncio.gather(
        watch(), receive(), plugin(a).send_stream(b.boundjid.full, source())
    )
    assert result.size == total
    # Socket buffers on loopback, the pieces in flight and the receive queue:
    # some MiB; without backpressure the sender would have read all 48.
    assert ahead < 16 << 20, ahead


@pytest.mark.parametrize("kind", KINDS)
async def test_a_live_stream_delivers_each_message_before_the_next_is_written(
    prosody: LocalProsody, tmp_path: Path, clients: list[XferClient], kind: str
) -> None:
    # Ping-pong: the source writes its next message only once the receiver
    # had the last one. Without flushing, the first 200 bytes would wait for
    # a full chunk that never comes.
    a, b = await peers_forcing(kind, prosody, tmp_path, clients)
    messages = [os.urandom(200) for _ in range(5)]
    arrived: list[asyncio.Event] = [asyncio.Event() for _ in messages]

    async def source() -> AsyncIterator[bytes]:
        for message, came in zip(messages, arrived, strict=True):
            yield message
            await asyncio.wait_for(came.wait(), 10)

    async def receive() -> bytes:
        offer = await plugin(b).next_offer(timeout=30)
        got = bytearray()
        async for piece in await offer.accept_stream():
            got.extend(piece)
            for i in range(len(got) // 200):
                arrived[i].set()
        return bytes(got)

    got, result = await asyncio.gather(
        receive(),
        plugin(a).send_stream(b.boundjid.full, source(), live=True),
    )
    assert got == b"".join(messages)
    assert result.size == len(got)
