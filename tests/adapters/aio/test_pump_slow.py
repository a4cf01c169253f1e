"""The receiving pump on a slow stream: verified bytes are kept across a
break, and progress shows as the data comes.

On a slow link the receiver's gathered piece (1 MiB) fills for minutes; a
break used to drop everything gathered since the last full piece, so every
resume started from the same place. Now a piece goes to be verified once
its first bytes are ``FLUSH_AFTER`` seconds old, and the bytes gathered when
the stream breaks are verified and kept (never the unverified rest).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.adapters.aio.sealed_streams import offer_for, sealed_rest
from tests.adapters.aio.test_partial_adoption import lookup, record
from xfer.aio import pump
from xfer.aio.pump import receive_sealed
from xfer.envelope import TAG_SIZE
from xfer.envelope.format import HEADER_SIZE
from xfer.errors import ConnectionFailed, IntegrityError
from xfer.transfer.offer import TransferOffer

KEY = os.urandom(32)
CHUNK = 4096  # offer_for's chunk size
CONTENT = os.urandom(300_000)


class SlowStream:
    """Hands out ``data`` ``piece`` bytes a read, ``delay`` seconds apart,
    then breaks (ConnectionFailed) or ends."""

    def __init__(self, data: bytes, *, piece: int, delay: float, breaks: bool) -> None:
        self._data = data
        self._piece = piece
        self._delay = delay
        self._breaks = breaks
        self.peer, self.sid = "a@x/1", "s"

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        await asyncio.sleep(self._delay)
        if not self._data and self._breaks:
            raise ConnectionFailed("the link went down")
        n = min(max_bytes, self._piece)
        out, self._data = self._data[:n], self._data[n:]
        return out

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise AssertionError("the receiver writes nothing")

    async def close(self) -> None:
        pass

    def abort(self, reason: str = "aborted") -> None:
        pass


def whole_chunks(sealed_bytes: int) -> int:
    """Plaintext bytes of the whole chunks in a sealed prefix."""
    return (sealed_bytes - HEADER_SIZE) // (CHUNK + TAG_SIZE) * CHUNK


async def receive(
    dest: Path, stream: SlowStream, offer: TransferOffer, sealed: int, **kw: object
) -> bytes:
    return await receive_sealed(
        stream,  # type: ignore[arg-type]
        KEY,
        offer,
        dest,
        sealed_size=sealed,
        keep=lambda e: not isinstance(e, IntegrityError),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_break_keeps_every_verified_chunk_before_it(tmp_path: Path) -> None:
    offer = offer_for(CONTENT)
    sealed = sealed_rest(offer, KEY, CONTENT)
    cut = 200_000  # far less than a gathered piece (1 MiB)
    assert cut < pump.GATHER
    dest = tmp_path / "f.bin"
    p = record(dest)
    stream = SlowStream(sealed[:cut], piece=8192, delay=0, breaks=True)
    with pytest.raises(ConnectionFailed):
        await receive(dest, stream, offer, len(sealed), partial=p)
    assert not dest.exists()
    found = lookup(tmp_path)
    assert found is not None
    kept = found.state.verified
    # Every whole chunk that came, but the last, which the opener holds
    # until it knows whether it is the final one; nothing unverified.
    assert whole_chunks(cut) - CHUNK <= kept <= whole_chunks(cut)
    assert found.part.read_bytes()[:kept] == CONTENT[:kept]
    assert found.part.stat().st_size == kept

    # The rest, sealed on its own, completes the file from there.
    rest = sealed_rest(offer, KEY, CONTENT[kept:])
    stream = SlowStream(rest, piece=65536, delay=0, breaks=False)
    sha = await receive(dest, stream, offer, len(rest), partial=found)
    assert sha == hashlib.sha256(CONTENT).digest()
    assert dest.read_bytes() == CONTENT
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


async def test_a_break_while_verified_plaintext_is_written_keeps_it(
    tmp_path: Path,
) -> None:
    # Pieces of 40 KiB: several are verified and written before the break,
    # the last of them perhaps still being written when it comes.
    offer = offer_for(CONTENT)
    sealed = sealed_rest(offer, KEY, CONTENT)
    dest = tmp_path / "f.bin"
    p = record(dest)
    cut = 250_000
    stream = SlowStream(sealed[:cut], piece=40_000, delay=0, breaks=True)
    with pytest.raises(ConnectionFailed):
        await receive(dest, stream, offer, len(sealed), partial=p)
    found = lookup(tmp_path)
    assert found is not None
    assert found.state.verified >= whole_chunks(cut) - CHUNK
    assert found.part.read_bytes() == CONTENT[: found.state.verified]


async def test_a_slow_stream_shows_progress_as_it_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pump, "FLUSH_AFTER", 0.05)
    content = CONTENT[:160_000]
    offer = offer_for(content)
    sealed = sealed_rest(offer, KEY, content)
    stream = SlowStream(sealed, piece=8192, delay=0.01, breaks=False)
    seen: list[int] = []
    dest = tmp_path / "f.bin"
    await receive(
        dest, stream, offer, len(sealed), progress=lambda d, _t: seen.append(d)
    )
    assert dest.read_bytes() == content
    # Many steps, in order, each at most what had verified (whole chunks of
    # what had come), ending at the size.
    assert seen == sorted(seen)
    assert len(set(seen)) >= 4
    assert all(d % CHUNK == 0 for d in seen[:-1])
    assert seen[-1] == len(content)
