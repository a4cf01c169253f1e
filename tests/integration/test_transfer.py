"""End-to-end encrypted transfers between two real clients through a real Prosody."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import introduce, transfer_client
from xfer.testing.prosody import LocalProsody
from xfer.xmpp.client import XferClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def peers(
    prosody: LocalProsody, tmp_path: Path
) -> AsyncIterator[tuple[XferClient, XferClient]]:
    a = await transfer_client(prosody, "alice", "send", tmp_path / "alice-id")
    b = await transfer_client(prosody, "bob", "recv", tmp_path / "bob-id")
    introduce(a, b)
    yield a, b
    await a.stop()
    await b.stop()


def _make(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def test_small_file_direct(
    peers: tuple[XferClient, XferClient], tmp_path: Path
) -> None:
    a, b = peers
    src = tmp_path / "hello.txt"
    data = _make(src, 1000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=20)
        assert offer.name == "hello.txt"
        assert offer.size == 1000
        assert offer.sha256 == hashlib.sha256(data).digest()
        return await offer.accept(inbox)

    got, result = await asyncio.gather(
        receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    )
    assert got == inbox / "hello.txt"
    assert got.read_bytes() == data
    assert result.transport == "socks5-direct"
    assert sorted(p.name for p in inbox.iterdir()) == ["hello.txt"]
