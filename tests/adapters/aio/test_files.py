"""xfer.aio.files on real files: atomicity, cleanup, and constant memory."""

from __future__ import annotations

import asyncio
import gc
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest

from xfer.aio.files import (
    READ_SIZE,
    AtomicWriter,
    open_file,
    open_stream_to_file,
    read_chunks,
    seal_file,
)
from xfer.envelope import HEADER_SIZE, TAG_SIZE, Sealer, Suite
from xfer.errors import DestinationExists, EnvelopeFormatError, IntegrityError

KEY = os.urandom(32)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".xfer-part"))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.bin"
    path.write_bytes(os.urandom(3 * READ_SIZE + 12345))
    return path


@pytest.mark.parametrize("threads", [1, 3])
async def test_file_round_trip(tmp_path: Path, plain: Path, threads: int):
    sealed, opened = tmp_path / "sealed.xfer", tmp_path / "opened.bin"
    with ThreadPoolExecutor(threads) as pool:
        executor = pool if threads > 1 else None
        header = await seal_file(
            KEY, plain, sealed, chunk_size=4096, executor=executor, workers=threads
        )
        assert sealed.stat().st_size == header.sealed_size(plain.stat().st_size)
        got = await open_file(KEY, sealed, opened, executor=executor, workers=threads)
    assert got == header
    assert opened.read_bytes() == plain.read_bytes()
    assert stat.S_IMODE(opened.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


async def test_empty_file_round_trip(tmp_path: Path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    await seal_file(KEY, src, tmp_path / "e.xfer", suite=Suite.AES256_CTR_HMAC_SHA256)
    assert (tmp_path / "e.xfer").stat().st_size == HEADER_SIZE + TAG_SIZE
    await open_file(KEY, tmp_path / "e.xfer", tmp_path / "e.out")
    assert (tmp_path / "e.out").read_bytes() == b""


@pytest.mark.parametrize(
    "damage",
    ["flip-late-chunk", "truncate", "wrong-key", "not-an-envelope"],
)
async def test_a_failed_open_leaves_nothing(tmp_path: Path, plain: Path, damage: str):
    sealed, dest = tmp_path / "sealed.xfer", tmp_path / "dest.bin"
    await seal_file(KEY, plain, sealed)
    data = bytearray(sealed.read_bytes())
    key = KEY
    expected: type[Exception] = IntegrityError
    if damage == "flip-late-chunk":
        data[-100] ^= 1  # the final chunk: everything before it verified
    elif damage == "truncate":
        del data[-(TAG_SIZE + 1) :]
    elif damage == "wrong-key":
        key = os.urandom(32)
    else:
        data[:4] = b"ZZZZ"
        expected = EnvelopeFormatError
    sealed.write_bytes(data)
    progress: list[int] = []
    with pytest.raises(expected):
        await open_file(key, sealed, dest, progress=lambda d, t: progress.append(d))
    assert not dest.exists()
    assert leftovers(tmp_path) == []
    if damage == "flip-late-chunk":
        assert progress  # megabytes of verified plaintext were written first


async def test_a_failed_open_leaves_an_existing_destination_untouched(
    tmp_path: Path, plain: Path
):
    sealed, dest = tmp_path / "sealed.xfer", tmp_path / "dest.bin"
    await seal_file(KEY, plain, sealed)
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(data)
    dest.write_bytes(b"precious")
    with pytest.raises(IntegrityError):
        await open_file(KEY, sealed, dest, overwrite=True)
    assert dest.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


async def test_existing_destination_needs_overwrite(tmp_path: Path, plain: Path):
    sealed = tmp_path / "sealed.xfer"
    sealed.write_bytes(b"exists")
    with pytest.raises(DestinationExists):
        await seal_file(KEY, plain, sealed)
    assert sealed.read_bytes() == b"exists"
    await seal_file(KEY, plain, sealed, overwrite=True)
    assert sealed.stat().st_size > plain.stat().st_size


async def test_commit_does_not_clobber_a_file_that_appeared_meanwhile(tmp_path: Path):
    dest = tmp_path / "race"
    async with AtomicWriter(dest) as writer:
        await writer.write(b"ours")
        dest.write_bytes(b"theirs")
        with pytest.raises(DestinationExists):
            await writer.commit()
    assert dest.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == []


async def test_cancellation_removes_the_temporary_file(tmp_path: Path):
    dest = tmp_path / "cancelled.bin"
    started = asyncio.Event()

    async def endless():
        # A stream that delivers the header and then stalls forever.
        from xfer.envelope import Sealer

        sealer = Sealer(KEY, chunk_size=1024)
        yield sealer.update(bytes(5000))
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(open_stream_to_file(KEY, endless(), dest))
    await started.wait()
    await asyncio.sleep(0.05)
    assert len(leftovers(tmp_path)) == 1  # plaintext of verified chunks, hidden
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_cancelled_while_opening_closes_what_the_thread_opened(tmp_path: Path):
    """The opening thread outlives a cancellation: what it opens is closed
    and undone, not left to the garbage collector (which would close a
    descriptor number that may belong to another file by then)."""
    from xfer.aio.files import _opened

    release = threading.Event()
    opened: list[BinaryIO] = []
    undone: list[bool] = []
    path = tmp_path / "fresh.bin"

    def opener() -> BinaryIO:
        release.wait(5)
        f = path.open("wb")
        opened.append(f)
        return f

    task = asyncio.create_task(_opened(opener, lambda: undone.append(True)))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert opened
    assert opened[0].closed
    assert undone == [True]


@pytest.mark.parametrize("hops", range(0, 12, 2))
async def test_a_writer_cancelled_at_any_point_of_opening_leaves_nothing(
    tmp_path: Path, hops: int
):
    dest = tmp_path / "out.bin"

    async def write() -> None:
        async with AtomicWriter(dest) as w:
            await w.write(b"x" * 100)
            await asyncio.Event().wait()

    task = asyncio.create_task(write())
    for _ in range(hops):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gc.collect()  # an orphaned file object would warn here (an error in tests)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_read_chunks_reads_a_file_descriptor(tmp_path: Path):
    path = tmp_path / "fd.bin"
    path.write_bytes(b"x" * 2500)
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = [p async for p in read_chunks(fd, size=1000)]
    finally:
        os.close(fd)
    assert [len(p) for p in pieces] == [1000, 1000, 500]


async def test_progress_reports_monotonic_totals(tmp_path: Path, plain: Path):
    seen: list[tuple[int, int | None]] = []
    await seal_file(
        KEY, plain, tmp_path / "s.xfer", progress=lambda d, t: seen.append((d, t))
    )
    size = plain.stat().st_size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (size, size)
    assert all(t == size for _, t in seen)


async def test_chunk_sizes_that_do_not_divide_the_read_size(tmp_path: Path):
    """The pending partial chunk must not overflow the output buffer."""
    src, sealed, out = tmp_path / "s", tmp_path / "s.xfer", tmp_path / "s.out"
    src.write_bytes(os.urandom(6 * READ_SIZE + 5))
    for chunk_size in (4095, 64511):
        await seal_file(KEY, src, sealed, chunk_size=chunk_size, overwrite=True)
        await open_file(KEY, sealed, out, overwrite=True)
        assert out.read_bytes() == src.read_bytes()


def test_a_full_disk_leaves_no_temporary_file(tmp_path: Path):
    """Writing fails (file size limit, as on a full disk): nothing stays behind."""
    import subprocess
    import sys

    src = tmp_path / "big.xfer"
    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    script = f"""
import asyncio, os, resource, signal, sys
from xfer.aio.files import open_stream_to_file, seal_file
key = bytes(32)
src, dest = {str(src)!r}, {str(dest_dir / "file")!r}
with open({str(tmp_path / "plain")!r}, "wb") as f:
    f.write(os.urandom(3 << 20))
asyncio.run(seal_file(key, {str(tmp_path / "plain")!r}, src, chunk_size=1024))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
async def pieces():
    data = open(src, "rb").read()
    for i in range(0, len(data), 1000):  # small writes stay in the file's buffer
        yield data[i : i + 1000]
try:
    asyncio.run(open_stream_to_file(key, pieces(), dest))
except OSError as exc:
    print("OSError", exc.errno)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "OSError" in result.stdout, result.stdout + result.stderr
    assert list(dest_dir.iterdir()) == []


@pytest.mark.parametrize("cut", [0, 1, 40])
async def test_a_version_2_file_opens_and_a_cut_one_leaves_nothing(
    tmp_path: Path, cut: int
):
    """``xfer decrypt`` reads format version 2 (flushed chunks) as well."""
    sealer = Sealer(KEY, chunk_size=1024, version=2)
    pieces = [os.urandom(n) for n in (10, 3000, 1, 700)]
    data = b"".join(sealer.update(p) + sealer.flush() for p in pieces)
    sealed, dest = tmp_path / "live.xfer", tmp_path / "live.out"
    sealed.write_bytes(data + sealer.finalize())
    header = await open_file(KEY, sealed, dest)
    assert header.version == 2
    assert dest.read_bytes() == b"".join(pieces)
    dest.unlink()
    sealed.write_bytes(data[: len(data) - cut])  # no final chunk
    with pytest.raises(IntegrityError):
        await open_file(KEY, sealed, dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []
