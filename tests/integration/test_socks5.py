"""Our SOCKS5 bytestreams against slixmpp's xep_0065, through Prosody's proxy."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.integration.conftest import client, slixmpp_peer
from xfer.errors import NoUsableTransport

pytestmark = pytest.mark.integration


async def slixmpp_client(prosody, resource: str):
    c = await slixmpp_peer(prosody, resource)
    c.register_plugin("xep_0030")
    c.register_plugin("xep_0065", {"auto_accept": True})
    return c


async def test_slixmpps_requester_to_our_target(prosody):
    ours = await client(prosody, "alice", "s5-ours")
    theirs = await slixmpp_client(prosody, "s5-theirs")
    try:
        payload = os.urandom(2 << 20)
        accepting = asyncio.ensure_future(ours.plugin["xfer_socks5"].accept(20))
        sock = await theirs.plugin["xep_0065"].handshake(ours.boundjid.full)
        inp = await accepting
        assert inp.streamhost == f"proxy.{prosody.domain}"
        for i in range(0, len(payload), 65536):
            await sock.write(payload[i : i + 65536])
        sock.transport.close()  # slixmpp's own close() raises AttributeError
        received = bytearray()
        while chunk := await inp.read():
            received += chunk
        await inp.close()
        assert bytes(received) == payload
    finally:
        await ours.stop()
        await theirs.stop()


async def test_our_requester_to_slixmpps_target(prosody):
    ours = await client(prosody, "alice", "s5-ours2")
    theirs = await slixmpp_client(prosody, "s5-theirs2")
    received = bytearray()
    closed = asyncio.Event()
    theirs.add_event_handler("socks5_data", received.extend)
    theirs.add_event_handler("socks5_closed", lambda _exc: closed.set())
    try:
        payload = os.urandom(2 << 20)
        # slixmpp's target takes only what it can reach; offer the proxy only.
        out = await ours.plugin["xfer_socks5"].open(
            theirs.boundjid.full, direct=False, proxy=True
        )
        assert out.streamhost == f"proxy.{prosody.domain}"
        await out.write(payload)
        await out.close()
        await asyncio.wait_for(closed.wait(), 20)
        assert bytes(received) == payload
    finally:
        await ours.stop()
        await theirs.stop()


async def test_no_reachable_streamhost_is_no_usable_transport(prosody, pair):
    a, b = pair
    plugin = a.plugin["xfer_socks5"]
    plugin.config["listen_host"] = "127.0.0.1"
    # Offer a direct streamhost nobody listens on: the target gives up on it.
    real_listen = plugin._listen

    async def dead_listen():
        await real_listen()
        return "127.0.0.1", 9  # discard port: nothing listens there

    plugin._listen = dead_listen
    with pytest.raises(NoUsableTransport):
        await plugin.open(b.boundjid.full, direct=True, proxy=False, timeout=20)


async def test_an_unauthorised_stream_is_refused(prosody):
    ours = await client(prosody, "alice", "s5-a")
    strict = await client(prosody, "carol", "s5-strict")
    strict.plugin["xfer_socks5"].config["authorize"] = None
    try:
        with pytest.raises(NoUsableTransport, match="not-acceptable"):
            await ours.plugin["xfer_socks5"].open(strict.boundjid.full, proxy=False)
    finally:
        await ours.stop()
        await strict.stop()
