"""Streams against a hostile server that carries their data (IBB): it cuts
the stream with a forged close, changes a byte, or drops the sender's
digest. Whatever it does, the receiver hands on only verified chunks, a
prefix of the stream, and then fails with StreamCut (never a clean end);
the sender fails too, with the receiver's count from its verdict."""

from __future__ import annotations

import asyncio
import base64
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import bob_direct, introduce, through
from xfer.envelope import DEFAULT_CHUNK_SIZE
from xfer.errors import StreamCut
from xfer.testing.hostile import HostileServer, body
from xfer.testing.transports import forcing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from xfer.testing.prosody import LocalProsody
    from xfer.xmpp.client import XferClient

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

NS_IBB = "http://jabber.org/protocol/ibb"
CONFIG: dict[str, object] = {
    "connect_timeout": 2.0,
    "stall_timeout": 3.0,
    "ibb_block_size": 16384,
    **forcing("ibb"),
}
DATA = os.urandom(5 * DEFAULT_CHUNK_SIZE + 100)


def ibb_data(element: ET.Element) -> ET.Element | None:
    return element.find(f"{{{NS_IBB}}}data")


def cut_at(nth: int) -> Callable[[str, ET.Element], Iterable[ET.Element] | None]:
    """In place of alice's ``nth`` IBB block, a close in her name; her later
    blocks are dropped."""
    seen = [0]

    def hook(_d: str, element: ET.Element) -> Iterable[ET.Element] | None:
        data = ibb_data(element)
        if data is None:
            return None
        seen[0] += 1
        if seen[0] < nth:
            return None
        if seen[0] > nth:
            return []
        close = ET.fromstring(
            f"<iq xmlns='jabber:client' type='set' id='forged-close' "
            f"to='{element.get('to')}'><close xmlns='{NS_IBB}' "
            f"sid='{data.get('sid')}'/></iq>"
        )
        return [close]

    return hook


def flip_in(nth: int) -> Callable[[str, ET.Element], Iterable[ET.Element] | None]:
    """One bit of alice's ``nth`` IBB block changed."""
    seen = [0]

    def hook(_d: str, element: ET.Element) -> Iterable[ET.Element] | None:
        data = ibb_data(element)
        if data is None:
            return None
        seen[0] += 1
        if seen[0] != nth:
            return None
        raw = bytearray(base64.b64decode(data.text or ""))
        raw[len(raw) // 2] ^= 0x01
        data.text = base64.b64encode(bytes(raw)).decode()
        return [element]

    return hook


def digest_dropped() -> Callable[[str, ET.Element], Iterable[ET.Element] | None]:
    """Once alice's data flows, none of her OTR messages go on (the digest,
    sent after the last block, is one of them)."""
    flowing = [False]

    def hook(_d: str, element: ET.Element) -> Iterable[ET.Element] | None:
        if ibb_data(element) is not None:
            flowing[0] = True
            return None
        if flowing[0] and (body(element) or "").startswith("?OTR"):
            return []
        return None

    return hook


async def pieces() -> AsyncIterator[bytes]:
    for i in range(0, len(DATA), 10_000):
        yield DATA[i : i + 10_000]


@pytest.mark.parametrize(
    ("attack", "whole"),
    [(cut_at(7), False), (flip_in(6), False), (digest_dropped(), True)],
    ids=["forged-close", "flipped-bit", "dropped-digest"],
)
async def test_a_stream_the_server_meddles_with_never_ends_well(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    attack: Callable[[str, ET.Element], Iterable[ET.Element] | None],
    whole: bool,
) -> None:
    alice = await through(hostile, prosody, clients, tmp_path / "alice-id", **CONFIG)
    bob = await bob_direct(prosody, clients, tmp_path / "bob-id", **CONFIG)
    introduce(alice, bob)
    hostile.on_stanza(attack, "to_server")
    got = bytearray()

    async def receive() -> None:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        async for piece in await offer.accept_stream():
            got.extend(piece)

    received, sent = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            alice.plugin["xfer_transfer"].send_stream(bob.boundjid.full, pieces()),
            return_exceptions=True,
        ),
        30,
    )
    assert isinstance(received, StreamCut), received
    # Only verified chunks came out: a prefix, whole chunks (or all of it,
    # when only the digest that binds the end was missing).
    assert bytes(got) == DATA[: len(got)]
    assert received.verified == len(got)
    if whole:
        assert len(got) == len(DATA)
    else:
        assert len(got) % DEFAULT_CHUNK_SIZE == 0
        assert len(got) < len(DATA)
    assert isinstance(sent, StreamCut), sent
    assert sent.verified in (None, len(got))
