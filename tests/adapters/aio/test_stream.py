"""The stream pumps (xfer.aio.stream): each chunk's plaintext leaves the
receiver as soon as it verified and never before; a cut, a changed byte, a
foreign header or a digest that disagrees never ends well; the sender seals
and hashes what it reads."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from xfer.aio.stream import (
    READ_PIECE,
    StreamProgress,
    receive_stream,
    send_stream,
    stream_sealer,
)
from xfer.envelope import Opener
from xfer.errors import IntegrityError, RemoteProtocolError, StreamCut
from xfer.transfer.offer import TransferDigest, TransferOffer

CHUNK = 4096
KEY = bytes(range(32))
#: A full chunk on the wire (envelope format version 2: word, data, tag).
WIRE = 4 + CHUNK + 32


def offer(salt: bytes = b"\x07" * 32) -> TransferOffer:
    return TransferOffer.stream(
        transfer_id=b"\x01" * 16, salt=salt, suite=1, chunk_size=CHUNK, name="s"
    )


def sealed(data: bytes, of: TransferOffer | None = None) -> bytes:
    sealer = stream_sealer(KEY, of or offer())
    return sealer.update(data) + sealer.finalize()


class QueueStream:
    """A ByteStream whose reads return what the test puts in, when it does."""

    peer = "peer@example.org/r"
    sid = "s"

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[bytes] = asyncio.Queue()
        self.written = bytearray()
        self.closed = False

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        return await self.pieces.get()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True

    def abort(self, reason: str = "aborted") -> None:
        self.closed = True


class IntoStream(QueueStream):
    """A QueueStream read with ``readinto`` (as SOCKS5 is): a piece larger
    than the reader's buffer stays behind for the next read."""

    def __init__(self) -> None:
        super().__init__()
        self.left = b""
        self.asked: list[int] = []

    async def readinto(self, buf: memoryview) -> int:
        self.asked.append(len(buf))
        if not self.left:
            self.left = await self.pieces.get()
        n = min(len(buf), len(self.left))
        buf[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def fresh() -> tuple[QueueStream, list[bytes], StreamProgress]:
    return QueueStream(), [], StreamProgress()


def digest_of(data: bytes) -> TransferDigest:
    return TransferDigest(
        transfer_id=b"\x01" * 16, sha256=hashlib.sha256(data).digest(), size=len(data)
    )


async def receiving(
    stream: QueueStream, said: TransferDigest, out: list[bytes], state: StreamProgress
) -> asyncio.Task[bytes]:
    async def sink(data: bytes) -> None:
        out.append(data)

    async def digest() -> TransferDigest:
        return said

    return asyncio.ensure_future(
        receive_stream(stream, KEY, offer(), sink, state=state, digest=digest)
    )


async def test_each_chunk_is_released_once_it_verified_and_not_before() -> None:
    data = os.urandom(3 * CHUNK + 10)
    wire = sealed(data)
    stream, out, state = fresh()
    task = await receiving(stream, digest_of(data), out, state)
    first_chunk_end = 58 + WIRE
    stream.pieces.put_nowait(wire[: first_chunk_end - 1])
    await asyncio.sleep(0.05)
    assert out == []  # one byte of its tag is missing: nothing yet
    stream.pieces.put_nowait(wire[first_chunk_end - 1 : first_chunk_end])
    await asyncio.sleep(0.05)
    assert b"".join(out) == data[:CHUNK]
    stream.pieces.put_nowait(wire[first_chunk_end:])
    stream.pieces.put_nowait(b"")
    assert await task == hashlib.sha256(data).digest()
    assert b"".join(out) == data
    assert state.plain == len(data)


@pytest.mark.parametrize("cut", [58 + 2 * WIRE, 58 + 2 * WIRE + 9])
async def test_a_cut_stream_ends_in_stream_cut_with_the_verified_count(
    cut: int,
) -> None:
    data = os.urandom(3 * CHUNK + 10)
    stream, out, state = fresh()
    task = await receiving(stream, digest_of(data), out, state)
    stream.pieces.put_nowait(sealed(data)[:cut])
    stream.pieces.put_nowait(b"")
    with pytest.raises(StreamCut, match=f"stream cut after {2 * CHUNK} verified"):
        await task
    assert b"".join(out) == data[: 2 * CHUNK]
    assert state.plain == 2 * CHUNK


async def test_a_slow_sink_gets_pieces_in_order_and_a_cut_counts_what_it_took() -> None:
    # The next piece is opened while the sink still holds the one before,
    # but handed on only after it; a cut meanwhile counts exactly what the
    # sink took, the piece under way included.
    data = os.urandom(2 * CHUNK + 10)
    wire = sealed(data)
    first_chunk_end = 58 + WIRE
    stream, state = QueueStream(), StreamProgress()
    took: list[bytes] = []
    gate = asyncio.Event()

    async def sink(plain: bytes) -> None:
        if not took:
            await gate.wait()
        took.append(plain)

    async def digest() -> TransferDigest:
        return digest_of(data)

    task = asyncio.ensure_future(
        receive_stream(stream, KEY, offer(), sink, state=state, digest=digest)
    )
    stream.pieces.put_nowait(wire[:first_chunk_end])
    await asyncio.sleep(0.05)
    stream.pieces.put_nowait(wire[first_chunk_end : first_chunk_end + WIRE])
    stream.pieces.put_nowait(b"")  # cut before the final chunk
    await asyncio.sleep(0.05)
    assert took == []  # the first piece is still in the sink
    assert not task.done()
    gate.set()
    with pytest.raises(StreamCut, match=f"stream cut after {2 * CHUNK} verified"):
        await task
    assert took == [data[:CHUNK], data[CHUNK : 2 * CHUNK]]
    assert state.plain == 2 * CHUNK
    assert state.digest.digest() == hashlib.sha256(data[: 2 * CHUNK]).digest()


async def test_a_changed_byte_stops_before_its_chunk() -> None:
    data = os.urandom(3 * CHUNK + 10)
    wire = bytearray(sealed(data))
    wire[58 + WIRE + 5] ^= 1  # in the second chunk
    stream, out, state = fresh()
    task = await receiving(stream, digest_of(data), out, state)
    stream.pieces.put_nowait(bytes(wire[: 58 + WIRE + 8]))
    stream.pieces.put_nowait(bytes(wire[58 + WIRE + 8 :]))
    stream.pieces.put_nowait(b"")
    with pytest.raises(IntegrityError):
        await task
    assert b"".join(out) == data[:CHUNK]


async def test_another_offers_stream_is_refused_at_its_first_chunk() -> None:
    data = os.urandom(CHUNK + 1)
    stream, out, state = fresh()
    task = await receiving(stream, digest_of(data), out, state)
    stream.pieces.put_nowait(sealed(data, offer(salt=b"\x08" * 32)))
    stream.pieces.put_nowait(b"")
    with pytest.raises(IntegrityError):
        await task
    assert out == []


@pytest.mark.parametrize(
    "said",
    [
        TransferDigest(transfer_id=b"\x01" * 16, sha256=bytes(32), size=CHUNK + 1),
        TransferDigest(
            transfer_id=b"\x01" * 16,
            sha256=hashlib.sha256(b"x" * (CHUNK + 1)).digest(),
            size=CHUNK,
        ),
    ],
    ids=["another-hash", "another-size"],
)
async def test_a_digest_that_disagrees_fails_the_end(said: TransferDigest) -> None:
    data = b"x" * (CHUNK + 1)
    stream, out, state = fresh()
    task = await receiving(stream, said, out, state)
    stream.pieces.put_nowait(sealed(data))
    stream.pieces.put_nowait(b"")
    with pytest.raises(IntegrityError):
        await task


async def test_a_stream_over_the_limit_stops_at_the_limit() -> None:
    data = os.urandom(3 * CHUNK)
    out: list[bytes] = []

    async def sink(piece: bytes) -> None:
        out.append(piece)

    async def digest() -> TransferDigest:
        return digest_of(data)

    stream, state = QueueStream(), StreamProgress()
    stream.pieces.put_nowait(sealed(data))
    stream.pieces.put_nowait(b"")
    with pytest.raises(RemoteProtocolError, match="longer than"):
        await receive_stream(
            stream, KEY, offer(), sink, state=state, digest=digest, limit=CHUNK + 5
        )
    assert b"".join(out) == data[: CHUNK + 5]
    assert state.plain == CHUNK + 5


async def test_the_sender_seals_and_hashes_what_it_reads() -> None:
    data = os.urandom(5 * CHUNK + 123)

    async def source() -> AsyncIterator[bytes]:
        yield data[:100]
        yield data[100:]  # larger than a piece: cut

    stream, state = QueueStream(), StreamProgress()
    ends: list[int] = []
    await send_stream(
        source(),
        stream,
        stream_sealer(KEY, offer()),
        state=state,
        on_written=lambda: ends.append(state.plain),
    )
    assert stream.closed
    assert ends == [len(data)]
    assert (state.plain, state.sealed) == (len(data), len(stream.written))
    assert state.digest.digest() == hashlib.sha256(data).digest()
    opener = Opener(KEY, transfer_id=b"\x01" * 16)
    assert opener.update(bytes(stream.written)) + opener.finalize() == data


async def test_a_live_stream_flushes_what_waits_and_the_opener_releases_it() -> None:
    sealer = stream_sealer(KEY, offer())
    assert (sealer.header.version, sealer.header.wire_chunk_size) == (2, WIRE)
    went = asyncio.Event()
    stream, state = QueueStream(), StreamProgress()

    async def source() -> AsyncIterator[bytes]:
        yield b"hello"
        # The source says nothing more until the first message went out:
        # without a flush this would wait for ever.
        await asyncio.wait_for(went.wait(), 5)
        yield b" world"

    async def watch() -> None:
        opener = Opener(KEY, transfer_id=b"\x01" * 16)
        while opener.update(bytes(stream.written)) != b"hello":
            opener = Opener(KEY, transfer_id=b"\x01" * 16)
            await asyncio.sleep(0.005)
        went.set()

    watching = asyncio.ensure_future(watch())
    await send_stream(source(), stream, sealer, state=state, flush_interval=0.01)
    await watching
    opener = Opener(KEY, transfer_id=b"\x01" * 16)
    assert opener.update(bytes(stream.written)) + opener.finalize() == b"hello world"


async def test_without_a_flush_interval_a_short_chunk_waits() -> None:
    stream, state = QueueStream(), StreamProgress()
    gate = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield b"hello"
        await gate.wait()

    sending = asyncio.ensure_future(
        send_stream(source(), stream, stream_sealer(KEY, offer()), state=state)
    )
    await asyncio.sleep(0.1)
    assert len(stream.written) == 58  # the header: no chunk yet, as for a pipe
    gate.set()
    await sending
    opener = Opener(KEY)
    assert opener.update(bytes(stream.written)) + opener.finalize() == b"hello"


async def test_small_pieces_are_joined_in_order_and_the_end_stays_behind() -> None:
    data = os.urandom(50 * CHUNK)

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]
        raise OSError("the source failed after all of it")

    stream, state = QueueStream(), StreamProgress()
    with pytest.raises(OSError, match="after all of it"):
        await send_stream(source(), stream, stream_sealer(KEY, offer()), state=state)
    assert state.plain == len(data)
    opener = Opener(KEY)
    assert opener.update(bytes(stream.written)) == data  # every chunk, in order
    with pytest.raises(IntegrityError):
        opener.finalize()  # but no end


async def test_a_failing_source_fails_the_sender_without_a_final_chunk() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a" * (CHUNK + 5)
        raise OSError("gone")

    stream, state = QueueStream(), StreamProgress()
    with pytest.raises(OSError, match="gone"):
        await send_stream(source(), stream, stream_sealer(KEY, offer()), state=state)
    opener = Opener(KEY)
    assert opener.update(bytes(stream.written)) == b"a" * CHUNK
    with pytest.raises(IntegrityError):  # no final chunk went out
        opener.finalize()


async def test_a_stream_read_into_buffers_is_opened_whole_and_in_order() -> None:
    # Pieces larger than a read's buffer, and odd ones cutting chunks: the
    # two buffers alternate and each is reused only once it was opened.
    data = os.urandom(3 * READ_PIECE + 12345)
    wire = sealed(data)
    stream, out, state = IntoStream(), [], StreamProgress()
    task = await receiving(stream, digest_of(data), out, state)
    for piece in (wire[:7], wire[7 : READ_PIECE + 999], wire[READ_PIECE + 999 :]):
        stream.pieces.put_nowait(piece)
    stream.pieces.put_nowait(b"")
    assert await task == hashlib.sha256(data).digest()
    assert b"".join(out) == data
    assert state.plain == len(data)
    assert set(stream.asked) == {READ_PIECE}
    # A whole buffer's worth was opened at once, not a piece at a time.
    assert max(len(p) for p in out) >= READ_PIECE // WIRE * CHUNK
