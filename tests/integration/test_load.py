"""Load: 20 end-to-end encrypted transfers at once among 10 accounts, all
through one Prosody, all in this one process.

Every account sends two files (to the next account round the ring and to the
one three further on) and receives two, with the transports the default
configuration picks. Each pair that exchanges a file trusts each other; the
OTR sessions are set up by the transfers themselves, all at the same time.
Every ``send_file`` must return and every received file must be
byte-identical (SHA-256) to what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import ACCOUNTS, introduce, transfer_client
from xfer.envelope import DEFAULT_CHUNK_SIZE
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import KINDS
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import SendResult

pytestmark = pytest.mark.integration

MiB = 1 << 20
USERS = [f"load{i:02d}" for i in range(10)]
#: Account i sends to i + 1 and i + 3 (round the ring), so it receives from
#: i - 1 and i - 3: two files out and two in for each, 20 transfers, and no
#: pair sends both ways.
STEPS = (1, 3)
#: Generous: 20 AKEs and transfers share one event loop on a loaded machine.
CONFIG = {"connect_timeout": 60.0, "offer_timeout": 120.0}
DEADLINE = 240.0


def plan() -> list[tuple[int, int, int]]:
    """(sender, receiver, size) of the 20 transfers: 1-2 MiB, mixed, with
    sizes on, just past and just short of a chunk boundary."""
    rng = random.Random(20)
    edges = [
        MiB,  # a whole number of chunks
        MiB + 1,  # one byte into a new chunk
        2 * MiB - 1,  # one byte short of a chunk boundary
        16 * DEFAULT_CHUNK_SIZE + DEFAULT_CHUNK_SIZE // 2 + 7,
    ]
    pairs = [(i, (i + step) % len(USERS)) for i in range(len(USERS)) for step in STEPS]
    sizes = edges + [rng.randrange(MiB, 2 * MiB) for _ in pairs[len(edges) :]]
    return [(s, r, size) for (s, r), size in zip(pairs, sizes, strict=True)]


@pytest.fixture
async def clients() -> AsyncIterator[list[XferClient]]:
    made: list[XferClient] = []
    yield made
    await asyncio.gather(*(c.stop() for c in made))


async def test_20_concurrent_transfers_among_10_accounts(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten more accounts on the session's server; conftest's login() reads
    # the passwords from its ACCOUNTS.
    new = {user: f"{user}-password" for user in USERS}
    prosody.add_accounts(new)
    for user, password in new.items():
        monkeypatch.setitem(ACCOUNTS, user, password)

    clients += await asyncio.gather(
        *(
            transfer_client(prosody, user, "load", tmp_path / f"{user}-id", **CONFIG)
            for user in USERS
        )
    )
    transfers = plan()
    for s, r, _ in transfers:
        introduce(clients[s], clients[r])

    sources = tmp_path / "sources"
    sources.mkdir()
    expected: dict[int, dict[str, bytes]] = {r: {} for r in range(len(USERS))}
    paths = []
    for s, r, size in transfers:
        path = sources / f"{USERS[s]}-to-{USERS[r]}.bin"
        data = os.urandom(size)
        path.write_bytes(data)
        expected[r][path.name] = hashlib.sha256(data).digest()
        paths.append(path)
    inboxes = [tmp_path / f"inbox-{user}" for user in USERS]
    for inbox in inboxes:
        inbox.mkdir()

    async def receive(r: int) -> list[tuple[str, Path]]:
        plugin = clients[r].plugin["xfer_transfer"]

        async def one() -> tuple[str, Path]:
            offer = await plugin.next_offer(timeout=DEADLINE)
            return offer.peer, await offer.accept(inboxes[r])

        return list(await asyncio.gather(*(one() for _ in expected[r])))

    async def send(i: int) -> SendResult:
        s, r, _ = transfers[i]
        plugin = clients[s].plugin["xfer_transfer"]
        return await plugin.send_file(clients[r].boundjid.full, paths[i])

    async def everything() -> tuple[list[list[tuple[str, Path]]], list[SendResult]]:
        received = asyncio.gather(*(receive(r) for r in range(len(USERS))))
        sent = asyncio.gather(*(send(i) for i in range(len(transfers))))
        return await asyncio.gather(received, sent)

    received, sent = await asyncio.wait_for(everything(), DEADLINE)

    assert len(sent) == 20
    for (_, r, size), result in zip(transfers, sent, strict=True):
        assert result.peer == clients[r].boundjid.full
        assert result.size == size
        assert result.transport in KINDS
    for r, got in enumerate(received):
        senders = sorted(peer for peer, _ in got)
        assert senders == sorted(
            clients[s].boundjid.full for s, rr, _ in transfers if rr == r
        )
        assert sorted(p.name for p in inboxes[r].iterdir()) == sorted(expected[r])
        for _, path in got:
            assert path.parent == inboxes[r]
            digest = hashlib.sha256(path.read_bytes()).digest()
            assert digest == expected[r][path.name], f"{path.name} differs"
