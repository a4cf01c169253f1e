"""One pass over the file on the sender, the digest after the data on the
receiver (version 2 offers).

The sender names the file by an id read from its two ends and hashes the
plaintext in the pass that seals it (a resume reads the kept prefix once
more); the receiver puts the file into place only once the sender's digest,
awaited after the final chunk verified, agrees with its own SHA-256 and
size, prefix included.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.adapters.aio.sealed_streams import MemoryStream, sealed_rest
from tests.adapters.aio.test_partial_adoption import CONTENT, PREFIX, kept, lookup
from tests.helpers import make_offer
from xfer.aio import source as source_module
from xfer.aio.pump import confirm_sealed, receive_sealed, send_sealed
from xfer.aio.source import identify, sha256_prefix
from xfer.envelope import Opener, Sealer
from xfer.errors import IntegrityError, LocalProtocolError
from xfer.transfer.offer import FILE_ID_SAMPLE, TransferDigest, TransferOffer

KEY = os.urandom(32)
SHA = hashlib.sha256(CONTENT).digest()


def offer_v2(content: bytes = CONTENT) -> TransferOffer:
    return make_offer(chunk_size=4096, size=len(content), name="f.bin")


def said(
    offer: TransferOffer, sha256: bytes = SHA, size: int | None = None
) -> TransferDigest:
    return TransferDigest(
        transfer_id=offer.transfer_id,
        sha256=sha256,
        size=offer.size if size is None else size,
    )


class Sink:
    """A ByteStream that keeps what the sender writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        raise AssertionError("the sender reads nothing")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    async def close(self) -> None:
        self.closed = True

    def abort(self, reason: str = "aborted") -> None:
        pass


def sealer_for(offer: TransferOffer) -> Sealer:
    return Sealer.announced(
        KEY, salt=offer.salt, transfer_id=offer.transfer_id, chunk_size=4096
    )


# -- the sender ----------------------------------------------------------------


async def test_the_sender_hashes_the_file_in_the_pass_that_seals_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    offer = offer_v2()
    sink = Sink()
    digest = hashlib.sha256()
    seen: list[bytes] = []
    await send_sealed(
        path,
        sink,
        sealer_for(offer),
        total=len(CONTENT),
        digest=digest,
        on_written=lambda: seen.append(digest.digest()),
    )
    assert seen == [SHA]  # complete by the time the last byte is out
    opener = Opener(KEY, transfer_id=offer.transfer_id)
    assert opener.update(bytes(sink.data)) + opener.finalize() == CONTENT


async def test_a_resume_hashes_the_kept_prefix_then_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    offer = offer_v2()
    sink = Sink()
    digest = await sha256_prefix(path, PREFIX)
    await send_sealed(
        path, sink, sealer_for(offer), total=len(CONTENT), start=PREFIX, digest=digest
    )
    assert digest.digest() == SHA
    opener = Opener(KEY, transfer_id=offer.transfer_id)
    assert opener.update(bytes(sink.data)) + opener.finalize() == CONTENT[PREFIX:]


async def test_a_prefix_longer_than_the_file_is_an_os_error(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"short")
    with pytest.raises(OSError, match="shorter"):
        await sha256_prefix(path, 6)
    assert (await sha256_prefix(path, 0)).digest() == hashlib.sha256().digest()


async def test_the_file_id_reads_only_both_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024))
    read: list[int] = []
    pread = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        piece = pread(fd, n, offset)
        read.append(len(piece))
        return piece

    monkeypatch.setattr(source_module.os, "pread", counting)
    first = await identify(path)
    assert sum(read) == 2 * FILE_ID_SAMPLE
    assert first.stat.st_size == 3 * 1024 * 1024
    # Stable for the unchanged file; another when it is touched.
    assert (await identify(path)).file_id == first.file_id
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert (await identify(path)).file_id != first.file_id


async def test_only_a_regular_file_is_identified(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        await identify(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IsADirectoryError):  # at once: no open that blocks
        await asyncio.wait_for(identify(fifo), 5)
    with pytest.raises(FileNotFoundError):
        await identify(tmp_path / "missing")


# -- the receiver --------------------------------------------------------------


async def receive(
    dest: Path,
    offer: TransferOffer,
    digest: TransferDigest | BaseException | None,
    *,
    rest: bytes = CONTENT,
    partial: object = None,
    waited: list[int] | None = None,
) -> bytes:
    stream = MemoryStream(sealed_rest(offer, KEY, rest), 65536)

    async def wait() -> TransferDigest:
        assert not stream._data, "awaited before the stream ended"
        if waited is not None:
            waited.append(1)
        if isinstance(digest, BaseException):
            raise digest
        assert digest is not None
        return digest

    return await receive_sealed(
        stream,
        KEY,
        offer,
        dest,
        sealed_size=len(sealed_rest(offer, KEY, rest)),
        partial=partial,  # type: ignore[arg-type]
        keep=lambda e: not isinstance(e, IntegrityError),
        digest=None if digest is None else wait,
    )


async def test_the_file_goes_into_place_once_the_digest_agrees(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    offer = offer_v2()
    waited: list[int] = []
    assert await receive(dest, offer, said(offer), waited=waited) == SHA
    assert waited == [1]
    assert dest.read_bytes() == CONTENT


@pytest.mark.parametrize(
    "digest",
    ["another hash", "another size", "none in time"],
)
async def test_without_an_agreeing_digest_nothing_is_stored(
    tmp_path: Path, digest: str
) -> None:
    dest = tmp_path / "f.bin"
    offer = offer_v2()
    got: TransferDigest | BaseException = {
        "another hash": said(offer, sha256=hashlib.sha256(b"other").digest()),
        "another size": said(offer, size=len(CONTENT) + 1),
        "none in time": IntegrityError(),
    }[digest]
    with pytest.raises(IntegrityError):
        await receive(dest, offer, got)
    assert list(tmp_path.iterdir()) == []


async def test_a_version_2_offer_is_not_stored_without_its_digest(
    tmp_path: Path,
) -> None:
    with pytest.raises(LocalProtocolError):
        await receive(tmp_path / "f.bin", offer_v2(), None)
    assert list(tmp_path.iterdir()) == []


async def test_a_resume_whose_sender_changed_the_kept_prefix_is_not_stored(
    tmp_path: Path,
) -> None:
    # We kept the first PREFIX bytes; the sender's file changed in them since
    # (same size, same id), and its digest is of the file as it is now: the
    # rest verifies chunk by chunk, the whole file does not.
    dest = tmp_path / "f.bin"
    kept(dest)
    found = lookup(tmp_path)
    assert found is not None
    changed = bytearray(CONTENT)
    changed[1000:1004] = b"EDIT"
    offer = offer_v2()
    with pytest.raises(IntegrityError):
        await receive(
            dest,
            offer,
            said(offer, sha256=hashlib.sha256(changed).digest()),
            rest=bytes(changed[PREFIX:]),
            partial=found,
        )
    assert list(tmp_path.iterdir()) == []  # the prefix is gone too


async def test_a_resume_with_the_digest_of_the_whole_file_is_stored(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    kept(dest)
    found = lookup(tmp_path)
    assert found is not None
    offer = offer_v2()
    got = await receive(dest, offer, said(offer), rest=CONTENT[PREFIX:], partial=found)
    assert got == SHA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert dest.read_bytes() == CONTENT


async def test_a_file_stored_lately_is_confirmed_by_the_digest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    offer = offer_v2()
    empty = sealed_rest(offer, KEY)

    async def digest_of(sha256: bytes) -> bytes:
        async def wait() -> TransferDigest:
            return said(offer, sha256=sha256)

        return await confirm_sealed(
            MemoryStream(empty), KEY, offer, path, sealed_size=len(empty), digest=wait
        )

    assert await digest_of(SHA) == SHA
    with pytest.raises(IntegrityError):
        await digest_of(bytes(32))
