"""The data phase in reused buffers: nothing stale, nothing unverified.

The receiver gathers the stream into a ring of a few buffers, reused for the
whole stream, and verifies each piece into one of two plaintext buffers; the
sender reads the file into one buffer. A reused buffer still holds an
earlier piece's bytes: only the bytes of the piece at hand may be opened,
hashed or written, and a chunk that fails in the middle of a reused buffer
must leave nothing past the last chunk that verified. Small gathered pieces
(``GATHER`` patched) make the ring go round many times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.adapters.aio.sealed_streams import MemoryStream, offer_for, sealed_rest
from xfer.aio import pump
from xfer.aio.atomic import AtomicWriter
from xfer.aio.files import read_chunks
from xfer.aio.pump import receive_sealed
from xfer.envelope import TAG_SIZE
from xfer.envelope.format import HEADER_SIZE
from xfer.errors import IntegrityError, StreamTruncated

KEY = os.urandom(32)
CHUNK = 4096
PIECE = 10 * 1024  # GATHER for these tests: not a multiple of the chunk
# Many turns of the ring, and a last piece shorter than the others.
CONTENT = os.urandom(37 * PIECE + 1234)


class IntoStream(MemoryStream):
    """A MemoryStream that also has ``readinto`` (as SOCKS5 streams do)."""

    async def readinto(self, buf: memoryview) -> int:
        piece = await self.read(len(buf))
        buf[: len(piece)] = piece
        return len(piece)


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump, "GATHER", PIECE)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to an AtomicWriter, as the bytes written then."""
    seen: list[bytes] = []
    real = AtomicWriter.write

    async def write(
        self: AtomicWriter,
        data: bytes | bytearray | memoryview,
        *,
        digest: hashlib._Hash | None = None,
    ) -> None:
        seen.append(bytes(data))
        await real(self, data, digest=digest)

    monkeypatch.setattr(AtomicWriter, "write", write)
    return seen


@pytest.mark.parametrize("kind", [MemoryStream, IntoStream])
@pytest.mark.parametrize("read_size", [1000, 7 * 1024, 64 * 1024])
async def test_reused_buffers_write_exactly_the_plaintext(
    tmp_path: Path, writes: list[bytes], kind: type[MemoryStream], read_size: int
) -> None:
    offer = offer_for(CONTENT)
    sealed = sealed_rest(offer, KEY, CONTENT)
    dest = tmp_path / "f.bin"
    sha = await receive_sealed(
        kind(sealed, read_size), KEY, offer, dest, sealed_size=len(sealed)
    )
    assert dest.read_bytes() == CONTENT
    assert sha == hashlib.sha256(CONTENT).digest()
    # In order, each write only the plaintext of its piece: no stale bytes
    # of an earlier piece in a reused buffer (the last piece is short).
    assert b"".join(writes) == CONTENT
    assert len(writes) > pump.QUEUED + 2  # the ring went round


@pytest.mark.parametrize("kind", [MemoryStream, IntoStream])
async def test_a_chunk_tampered_in_a_reused_buffer_writes_nothing_past_it(
    tmp_path: Path, writes: list[bytes], kind: type[MemoryStream]
) -> None:
    offer = offer_for(CONTENT)
    sealed = bytearray(sealed_rest(offer, KEY, CONTENT))
    sealed_chunk = CHUNK + TAG_SIZE
    bad = 60  # in the 24th gathered piece: the ring has gone round by then
    assert (HEADER_SIZE + bad * sealed_chunk) // PIECE > 2 * (pump.QUEUED + 2)
    sealed[HEADER_SIZE + bad * sealed_chunk + 100] ^= 1
    dest = tmp_path / "f.bin"
    with pytest.raises(IntegrityError):
        await receive_sealed(
            kind(bytes(sealed), 5000), KEY, offer, dest, sealed_size=len(sealed)
        )
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too
    written = b"".join(writes)
    # Only chunks that verified, and none from the bad one on.
    assert len(written) <= bad * CHUNK
    assert written == CONTENT[: len(written)]


async def test_a_stream_cut_in_a_reused_buffer_keeps_only_verified_chunks(
    tmp_path: Path, writes: list[bytes]
) -> None:
    offer = offer_for(CONTENT)
    sealed = sealed_rest(offer, KEY, CONTENT)
    cut = len(sealed) - 3 * PIECE - 17
    dest = tmp_path / "f.bin"
    with pytest.raises(StreamTruncated):
        await receive_sealed(
            IntoStream(sealed[:cut], 3000), KEY, offer, dest, sealed_size=len(sealed)
        )
    assert not dest.exists()
    written = b"".join(writes)
    assert len(written) % CHUNK == 0
    assert len(written) <= (cut - HEADER_SIZE) // (CHUNK + TAG_SIZE) * CHUNK
    assert written == CONTENT[: len(written)]


async def test_a_stream_that_returns_more_than_asked_is_refused(
    tmp_path: Path,
) -> None:
    offer = offer_for(CONTENT)
    sealed = sealed_rest(offer, KEY, CONTENT)

    class Generous(MemoryStream):
        async def read(self, max_bytes: int = 1 << 20) -> bytes:
            return await super().read(max_bytes + 1)

    with pytest.raises(Exception, match="more than was asked"):
        await receive_sealed(
            Generous(sealed, 3 * PIECE),
            KEY,
            offer,
            tmp_path / "f.bin",
            sealed_size=len(sealed),
        )
    assert list(tmp_path.iterdir()) == []


async def test_read_chunks_into_one_buffer(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    buf = bytearray(PIECE)
    got = bytearray()
    async for piece in read_chunks(path, start=1000, into=buf):
        assert isinstance(piece, memoryview)
        assert piece.obj is buf  # no copy: a view of the one buffer
        got += piece
    assert got == CONTENT[1000:]
