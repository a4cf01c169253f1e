"""A real Prosody on loopback (started once per test session) and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import xfer.xmpp.ibb as ibb_module
import xfer.xmpp.socks5 as socks5_module
import xfer.xmpp.transfer as transfer_module
from tests.conftest import require_or_skip
from xfer.otr.trust import Verification
from xfer.testing._listener import LoopbackListener
from xfer.testing.faults import FaultProxy
from xfer.testing.hostile import HostileServer
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp.client import XferClient, connect

ACCOUNTS = {name: f"{name}-password" for name in ("alice", "bob", "carol", "dave")}


@pytest.fixture(scope="session")
def prosody() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    # Offline storage on, as stock servers run it: what it stores for an
    # account that went away reaches that account's next login, in any test.
    with LocalProsody(accounts=dict(ACCOUNTS), offline=True) as server:
        yield server


async def login(
    server: LocalProsody,
    user: str,
    resource: str,
    *,
    via: LoopbackListener[Any] | None = None,
) -> XferClient:
    """``user``'s client on the test server, logged in as ``resource``
    (through the proxy ``via``, if given)."""
    host, port = ("127.0.0.1", server.c2s_port) if via is None else (via.host, via.port)
    return await connect(
        f"{user}@{server.domain}/{resource}",
        server.accounts[user],
        host,
        port,
        tls="none",
    )


async def client(
    server: LocalProsody, user: str, resource: str, **ibb: object
) -> XferClient:
    c = await login(server, user, resource)
    c.register_plugin(
        "xfer_ibb", {"authorize": lambda *_: True, **ibb}, module=ibb_module
    )
    c.register_plugin(
        "xfer_socks5", {"authorize": lambda *_: True}, module=socks5_module
    )
    return c


async def slixmpp_peer(server: LocalProsody, resource: str) -> XferClient:
    """bob with only slixmpp's own plugins, for interop tests."""
    return await login(server, "bob", resource)


@pytest.fixture
async def pair(prosody: LocalProsody) -> AsyncIterator[tuple[XferClient, XferClient]]:
    a = await client(prosody, "alice", "a")
    b = await client(prosody, "bob", "b")
    yield a, b
    await a.stop()
    await b.stop()


async def transfer_client(
    server: LocalProsody,
    user: str,
    resource: str,
    identity: Path,
    *,
    via: LoopbackListener[Any] | None = None,
    **config: object,
) -> XferClient:
    """A client with the whole xfer stack (``xfer_transfer``) and an identity
    (through the proxy ``via``, if given)."""
    c = await login(server, user, resource, via=via)
    c.register_plugin(
        "xfer_transfer",
        {"identity": identity, "connect_timeout": 10.0, **config},
        module=transfer_module,
    )
    return c


def introduce(a: XferClient, b: XferClient) -> None:
    """Make a and b trust each other's OTR fingerprints (as after a check)."""
    for one, other in ((a, b), (b, a)):
        key = other.plugin["xfer_otr"].account.private_key
        otr = one.plugin["xfer_otr"]
        otr.trust.trust(
            other.boundjid.bare, key.public.fingerprint, Verification.MANUAL, now=0
        )
        transfer = one.plugin["xfer_transfer"]
        if transfer.identity is not None:
            transfer.save_trust()


# -- a hostile server in front of alice (xfer.testing.hostile) ------------------


@pytest.fixture
async def hostile(prosody: LocalProsody) -> AsyncIterator[HostileServer]:
    """A stanza-level man in the middle on loopback, in front of Prosody."""
    async with HostileServer("127.0.0.1", prosody.c2s_port) as server:
        yield server
        assert server.errors == []


@pytest.fixture
async def clients() -> AsyncIterator[list[XferClient]]:
    """Clients a test made, stopped at its end."""
    made: list[XferClient] = []
    yield made
    for c in made:
        await c.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[list[FaultProxy]]:
    """Fault-injecting proxies a test made, stopped at its end."""
    made: list[FaultProxy] = []
    yield made
    for p in made:
        await p.stop()


async def through(
    server: HostileServer,
    prosody: LocalProsody,
    clients: list[XferClient],
    identity: Path,
    resource: str = "a",
    **config: object,
) -> XferClient:
    """alice with the whole xfer stack, connected through ``server``."""
    alice = await transfer_client(
        prosody, "alice", resource, identity, via=server, **config
    )
    clients.append(alice)
    return alice


async def bob_direct(
    prosody: LocalProsody, clients: list[XferClient], identity: Path, **config: object
) -> XferClient:
    """bob with the whole xfer stack, straight to Prosody."""
    bob = await transfer_client(prosody, "bob", "b", identity, **config)
    clients.append(bob)
    return bob


@pytest.fixture
async def alice(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> XferClient:
    """alice with the whole xfer stack, through the hostile server."""
    return await through(hostile, prosody, clients, tmp_path / "alice-id")


@pytest.fixture
async def bob(
    request: pytest.FixtureRequest,
    prosody: LocalProsody,
    clients: list[XferClient],
    tmp_path: Path,
) -> XferClient:
    """bob with the whole xfer stack, straight to Prosody; parametrize it
    indirectly with a dict of settings to change his configuration."""
    config: dict[str, object] = getattr(request, "param", {})
    return await bob_direct(prosody, clients, tmp_path / "bob-id", **config)
