"""Resume through real outages: the receiver's server restarted mid-transfer."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import xfer.xmpp.transfer as transfer_module
from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, introduce
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.testing.transports import forcing
from xfer.xmpp.client import XferClient, connect

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    with LocalProsody(accounts=dict(ACCOUNTS), offline=True) as prosody:
        yield prosody


@pytest.fixture
async def clients() -> AsyncIterator[list[XferClient]]:
    made: list[XferClient] = []
    yield made
    for c in made:
        await c.stop()


async def user(
    server: LocalProsody,
    name: str,
    resource: str | None,
    identity: Path,
    clients: list[XferClient],
    **config: object,
) -> XferClient:
    jid = f"{name}@{server.domain}" + ("" if resource is None else f"/{resource}")
    c = await connect(jid, ACCOUNTS[name], "127.0.0.1", server.c2s_port, tls="none")
    clients.append(c)
    c.register_plugin(
        "xfer_transfer",
        {"identity": identity, "connect_timeout": 10.0, **config},
        module=transfer_module,
    )
    return c


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "assigned"])
async def test_the_receivers_server_restarted_mid_transfer(
    server: LocalProsody, tmp_path: Path, clients: list[XferClient], fixed: bool
) -> None:
    """Prosody stops mid-transfer (IBB, through it) and comes back on the
    same port 3 s later: both clients log in again with new server sessions
    (bob under the same resource, or under one the server assigns) and
    alice offers the rest to bob where he is now; the file verifies. The
    figure printed is the time from the server listening again to the first
    byte of the rest."""
    a = await user(server, "alice", "send", tmp_path / "a", clients, **forcing("ibb"))
    b = await user(
        server,
        "bob",
        "recv" if fixed else None,
        tmp_path / "b",
        clients,
        **forcing("ibb"),
    )
    first_full = b.boundjid.full
    introduce(a, b)
    src = tmp_path / "big.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    loop = asyncio.get_running_loop()
    halted = asyncio.Event()
    back: list[float] = []
    resumed: list[float] = []

    def progress(done: int, total: int | None) -> None:
        if done > 3 * MiB and not halted.is_set():
            halted.set()
        elif back and not resumed:
            resumed.append(loop.time())

    async def outage() -> None:
        await halted.wait()
        server.halt()
        await asyncio.sleep(3)
        server.restart()
        back.append(loop.time())

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    _, got, result = await asyncio.wait_for(
        asyncio.gather(
            outage(),
            receive(),
            a.plugin["xfer_transfer"].send_file(first_full, src, progress=progress),
        ),
        240,
    )
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert result.breaks >= 1
    assert result.peer == b.boundjid.full
    assert (result.peer == first_full) is fixed
    print(f"server back -> rest flowing: {resumed[0] - back[0]:.2f} s")
