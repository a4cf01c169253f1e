"""Standard input and output as a stream's source and sink (xfer.aio.stdio):
a pipe through the event loop (a larger pipe buffer, backpressure from its
reader), a file or a device in a thread, and the descriptor's blocking mode
put back afterwards (its open file is the shell's too)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xfer.aio import stdio
from xfer.aio.stdio import (
    GATHER,
    PIPE_SIZE,
    RATE_WINDOW,
    STREAM_PIECE,
    Rate,
    Readable,
    ReadAhead,
    gathered,
    input_pieces,
    output_sink,
    readable,
)


async def test_input_from_a_pipe_and_from_a_file(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    read_end, write_end = os.pipe()
    loop = asyncio.get_running_loop()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as f:
            f.write(data)

    feeding = loop.run_in_executor(None, feed)
    got = b"".join([p async for p in input_pieces(read_end, 65536)])
    await feeding
    # The loop's non-blocking mode does not outlive the reading (standard
    # input's open file is the shell's too).
    assert os.get_blocking(read_end)
    if hasattr(fcntl, "F_GETPIPE_SZ"):  # Linux: a larger pipe, larger reads
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= PIPE_SIZE
    os.close(read_end)
    assert got == data
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        assert b"".join([p async for p in input_pieces(f.fileno(), 65536)]) == data
    # A device the event loop cannot watch: read like a file.
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        assert [p async for p in input_pieces(null)] == []
    finally:
        os.close(null)


async def test_output_to_a_pipe_waits_for_its_reader() -> None:
    read_end, write_end = os.pipe()
    try:
        async with output_sink(write_end) as sink:
            # Nobody reads: the pipe (64 KiB) and the writer's buffer fill,
            # and a write then waits instead of taking more.
            blocked = asyncio.ensure_future(sink(b"x" * (4 << 20)))
            await asyncio.sleep(0.2)
            assert not blocked.done()
            reading = asyncio.get_running_loop().run_in_executor(
                None, _read_all, read_end, 4 << 20
            )
            await blocked
            await sink(b"y")
        assert os.get_blocking(write_end)
        os.close(write_end)
        write_end = -1
        assert await reading == b"x" * (4 << 20)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)


def _read_all(fd: int, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += os.read(fd, size - len(out))
    return bytes(out)


async def test_a_pipe_is_read_into_the_callers_buffer_all_it_holds_at_once() -> None:
    read_end, write_end = os.pipe()
    reader = input_pieces(read_end)
    assert isinstance(reader, Readable)
    try:
        buf = bytearray(PIPE_SIZE)
        # Nothing written yet: a read waits, and a cancelled one takes nothing.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readinto(memoryview(buf)), 0.1)
        data = os.urandom(200_000)  # more than one default pipe buffer
        writing = asyncio.get_running_loop().run_in_executor(
            None, os.write, write_end, data
        )
        # The widened pipe takes it all at once (Linux).
        assert await writing == len(data)
        n = await reader.readinto(memoryview(buf))
        if hasattr(fcntl, "F_GETPIPE_SZ"):
            assert n == len(data)  # one read took all the pipe held
        got = bytes(buf[:n])
        while len(got) < len(data):
            n = await reader.readinto(memoryview(buf))
            got += buf[:n]
        assert got == data
        assert not os.get_blocking(read_end)  # the loop's mode, while reading
        os.close(write_end)
        write_end = -1
        assert await reader.readinto(memoryview(buf)) == 0  # the end
    finally:
        await reader.aclose()
        if write_end >= 0:
            os.close(write_end)
    assert os.get_blocking(read_end)  # put back: the shell's open file
    os.close(read_end)


async def test_an_iterable_read_ahead_joins_pieces_and_its_error_stays_behind() -> None:
    reused = bytearray(b"abc")

    async def source() -> AsyncIterator[bytes | bytearray]:
        yield b"12"
        yield reused  # the source changes it after: the copy stays
        yield b""
        yield b"x" * 10
        raise OSError("gone")

    reader = readable(source())
    assert isinstance(reader, ReadAhead)
    await asyncio.sleep(0.01)  # all of it queued
    reused[:] = b"zzz"
    buf = bytearray(8)
    assert await reader.readinto(memoryview(buf)) == 8  # joined, then cut
    assert bytes(buf) == b"12abcxxx"
    assert await reader.readinto(memoryview(buf)) == 7  # the rest, not the error
    with pytest.raises(OSError, match="gone"):
        await reader.readinto(memoryview(buf))
    await reader.aclose()
    stream = asyncio.StreamReader()
    stream.feed_data(b"hello")
    stream.feed_eof()
    reader = readable(stream)
    assert await reader.readinto(memoryview(buf)) == 5
    assert await reader.readinto(memoryview(buf)) == 0
    await reader.aclose()


async def test_a_bulk_read_gathers_what_follows_and_stops_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A writer in 128 KiB pieces (as cat writes): what follows the first
    # piece within the gathering wait joins it, up to GATHER bytes. (The
    # wait is long here, so a loaded machine does not decide the test.)
    monkeypatch.setattr(stdio, "GATHER_WAIT", 30.0)
    read_end, write_end = os.pipe()
    source = input_pieces(read_end)
    loop = asyncio.get_running_loop()
    pieces = [os.urandom(128 * 1024) for _ in range(5)]
    buf = memoryview(bytearray(STREAM_PIECE))
    try:
        os.write(write_end, pieces[0])
        n = await source.readinto(buf)
        assert n == len(pieces[0])
        for i, piece in enumerate(pieces[1:], 1):
            loop.call_later(0.001 * i, os.write, write_end, piece)
        n = await gathered(source, buf, n)
        assert n == GATHER
        assert buf[:n] == b"".join(pieces)[:GATHER]
        # Nothing more comes for now: the gathering ends after its wait
        # with what it has (a live source is not held back for long).
        monkeypatch.setattr(stdio, "GATHER_WAIT", 0.01)
        assert await source.readinto(buf) == len(pieces[4])
        assert await gathered(source, buf, 5) == 5
        # The end: what was read stays, the next read sees the end.
        os.write(write_end, b"last")
        os.close(write_end)
        write_end = -1
        assert await gathered(source, buf, 0) == 4
        assert buf[:4] == b"last"
        assert await source.readinto(buf) == 0
    finally:
        await source.aclose()
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


async def test_a_failing_source_stops_the_gathering_and_fails_the_next_read() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(0)
        raise OSError("the source broke")

    source = readable(pieces())
    buf = memoryview(bytearray(1024))
    n = await source.readinto(buf)
    n = await gathered(source, buf, n)
    assert buf[:n] == b"first"
    with pytest.raises(OSError, match="the source broke"):
        await source.readinto(buf)
    await source.aclose()


def test_a_rate_is_fast_only_over_a_window_at_the_bulk_rate() -> None:
    rate = Rate()
    assert not rate.saw(1 << 30)  # within the first window: not judged yet
    rate.since -= RATE_WINDOW
    assert rate.saw(0)  # 1 GiB in a window: fast
    rate.since -= 1.0
    assert not rate.saw(200)  # 200 bytes in a second: slow
    rate.fast = True
    rate.reset()
    assert not rate.fast
