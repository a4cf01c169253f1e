"""The shared reader: one read of a file for several recipients, memory bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from xfer.aio.fanout import SharedRead

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from pathlib import Path

PIECE = 4096


def make_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    return path, data


async def drain(pieces: AsyncGenerator[bytes, None], delay: float = 0) -> bytes:
    out = bytearray()
    async with contextlib.aclosing(pieces) as it:
        async for piece in it:
            out += piece
            if delay:
                await asyncio.sleep(delay)
    return bytes(out)


async def test_every_recipient_gets_the_file_from_one_read(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 50 * PIECE + 123)
    peers = [f"p{i}" for i in range(4)]
    shared = SharedRead(path, peers, window=3, piece=PIECE)
    got = await asyncio.gather(
        *(drain(shared.pieces(p), delay=0.001 * i) for i, p in enumerate(peers))
    )
    await shared.close()
    assert got == [data] * 4
    assert shared.bytes_read == len(data)
    assert shared.bytes_read_alone == 0


async def test_memory_is_bounded_by_the_window(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 40 * PIECE)
    shared = SharedRead(path, ["fast", "slow"], window=4, piece=PIECE)
    most = 0

    async def watch(pieces: AsyncGenerator[bytes, None]) -> bytes:
        nonlocal most
        out = bytearray()
        async with contextlib.aclosing(pieces) as it:
            async for piece in it:
                most = max(most, len(shared._held))
                out += piece
        return bytes(out)

    fast = watch(shared.pieces("fast"))
    slow = drain(shared.pieces("slow"), delay=0.002)
    assert await asyncio.gather(fast, slow) == [data, data]
    await shared.close()
    assert 0 < most <= 4  # the fast one waited for the slow one
    assert shared.bytes_read == len(data)


async def test_one_that_leaves_early_does_not_stop_the_others(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 30 * PIECE)
    shared = SharedRead(path, ["quits", "stays"], window=2, piece=PIECE)

    async def quit_after(n: int) -> None:
        async with contextlib.aclosing(shared.pieces("quits")) as it:
            async for _ in it:
                n -= 1
                if n == 0:
                    return

    _, got = await asyncio.gather(quit_after(3), drain(shared.pieces("stays")))
    await shared.close()
    assert got == data
    assert shared.bytes_read == len(data)


async def test_a_withdrawn_recipient_is_not_waited_for(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 20 * PIECE)
    # A long join_wait: only the withdrawal lets the reader move on.
    shared = SharedRead(path, ["a", "declines"], window=2, piece=PIECE, join_wait=60)

    async def declines() -> None:
        await asyncio.sleep(0.05)
        shared.withdraw("declines")

    got, _ = await asyncio.wait_for(
        asyncio.gather(drain(shared.pieces("a")), declines()), 10
    )
    assert got == data


async def test_a_late_or_resuming_recipient_reads_alone(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 20 * PIECE)
    shared = SharedRead(path, ["a", "late", "resumes"], window=2, piece=PIECE)
    shared.withdraw("late")  # the reader need not wait for it ...
    shared.withdraw("resumes")
    assert await drain(shared.pieces("a")) == data
    # ... and when it does come, past the window, it reads on its own.
    assert await drain(shared.pieces("late")) == data
    assert (
        await drain(shared.pieces("resumes", start=5 * PIECE + 7))
        == data[5 * PIECE + 7 :]
    )
    await shared.close()
    alone = len(data) + len(data) - (5 * PIECE + 7)
    assert shared.bytes_read_alone == alone
    assert shared.bytes_read == len(data) + alone


async def test_the_first_piece_waits_join_wait_for_the_others(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 10 * PIECE)
    shared = SharedRead(path, ["a", "never"], window=2, piece=PIECE, join_wait=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(drain(shared.pieces("a")), 10) == data
    assert loop.time() - started >= 0.19  # it waited, then went on alone
    await shared.close()


async def test_empty_file(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 0)
    shared = SharedRead(path, ["a", "b"], piece=PIECE)
    got = await asyncio.gather(drain(shared.pieces("a")), drain(shared.pieces("b")))
    assert got == [b"", b""]
    await shared.close()


async def test_a_reader_made_but_started_late_still_gets_everything(
    tmp_path: Path,
) -> None:
    """A recipient's reader is made when its data phase is set up, and first
    iterated a moment later; if the others went past the first piece
    meanwhile, it reads on its own, from the start."""
    path, data = make_file(tmp_path, 12 * PIECE)
    shared = SharedRead(path, ["a", "late"], window=2, piece=PIECE, join_wait=0.1)
    late = shared.pieces("late")  # made while the first piece is held
    assert await asyncio.wait_for(drain(shared.pieces("a")), 10) == data
    assert await asyncio.wait_for(drain(late), 10) == data
    await shared.close()
    assert shared.bytes_read_alone == len(data)


async def test_the_shared_read_is_hashed_once_for_all(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 30 * PIECE + 5)
    peers = [f"p{i}" for i in range(4)]
    shared = SharedRead(path, peers, window=3, piece=PIECE)
    got = await asyncio.gather(*(drain(shared.pieces(p)) for p in peers))
    await shared.close()
    assert got == [data] * 4
    want = hashlib.sha256(data).digest()
    assert [shared.sha256(p, len(data)) for p in peers] == [want] * 4
    assert shared.bytes_hashed == len(data)  # once, not four times


async def test_one_that_read_alone_from_the_start_gets_its_own_digest(
    tmp_path: Path,
) -> None:
    path, data = make_file(tmp_path, 20 * PIECE)
    shared = SharedRead(path, ["a", "late", "resumes"], window=2, piece=PIECE)
    shared.withdraw("late")
    shared.withdraw("resumes")
    assert await drain(shared.pieces("a")) == data
    assert await drain(shared.pieces("late")) == data  # past the window: alone
    await drain(shared.pieces("resumes", start=PIECE))
    await shared.close()
    want = hashlib.sha256(data).digest()
    assert shared.sha256("a", len(data)) == want
    assert shared.sha256("late", len(data)) == want
    assert shared.bytes_hashed == 2 * len(data)
    # A resume hashes for itself (its prefix too): no digest from here.
    with pytest.raises(OSError, match="changed"):
        shared.sha256("resumes", len(data) - PIECE)


async def test_no_digest_for_bytes_not_handed_out(tmp_path: Path) -> None:
    """A recipient that stopped early, or a size other than what was read
    (the file grew or shrank since the offer), gets no digest: a digest of
    other bytes than those sent must never go out."""
    path, data = make_file(tmp_path, 10 * PIECE)
    shared = SharedRead(path, ["a", "b"], window=2, piece=PIECE)
    early = shared.pieces("b")
    async with contextlib.aclosing(early) as it:
        await anext(it)
    assert await drain(shared.pieces("a")) == data
    await shared.close()
    with pytest.raises(OSError, match="changed"):
        shared.sha256("b", len(data))
    with pytest.raises(OSError, match="changed"):
        shared.sha256("a", len(data) - 1)
    with pytest.raises(OSError, match="changed"):
        shared.sha256("nobody", len(data))
    assert shared.sha256("a", len(data)) == hashlib.sha256(data).digest()


async def test_unhashed_the_recipients_hash_for_themselves(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 8 * PIECE)
    shared = SharedRead(path, ["a", "b"], window=2, piece=PIECE, hashed=False)
    got = await asyncio.gather(drain(shared.pieces("a")), drain(shared.pieces("b")))
    await shared.close()
    assert got == [data, data]
    assert shared.bytes_hashed == 0
    with pytest.raises(OSError, match="changed"):
        shared.sha256("a", len(data))
