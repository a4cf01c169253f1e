"""IBB on the real server: the XEP's errors, backpressure, and slixmpp's own plugin."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import client, slixmpp_peer
from xfer.errors import TransportError
from xfer.framing.ibb import NS

pytestmark = pytest.mark.integration


async def raw_iq(sender, to: str, xml: str) -> None:
    iq = sender.make_iq_set(ito=to)
    iq.xml.append(ET.fromstring(xml))
    await iq.send(timeout=10)


async def error_of(sender, to: str, xml: str) -> str:
    with pytest.raises(IqError) as info:
        await raw_iq(sender, to, xml)
    return info.value.iq["error"]["condition"]


def data(sid: str, seq: int, payload: bytes | str) -> str:
    text = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return f"<data xmlns='{NS}' sid='{sid}' seq='{seq}'>{text}</data>"


def open_(sid: str, block_size: int = 4096) -> str:
    return f"<open xmlns='{NS}' sid='{sid}' block-size='{block_size}' stanza='iq'/>"


async def test_unknown_sid_is_item_not_found(pair):
    a, b = pair
    assert await error_of(a, b.boundjid.full, data("nope", 0, b"x")) == "item-not-found"
    close = f"<close xmlns='{NS}' sid='nope'/>"
    assert await error_of(a, b.boundjid.full, close) == "item-not-found"


async def test_bad_base64_is_bad_request(pair):
    a, b = pair
    await raw_iq(a, b.boundjid.full, open_("s1"))
    assert (
        await error_of(a, b.boundjid.full, data("s1", 0, "!!notbase64!!"))
        == "bad-request"
    )


async def test_out_of_order_seq_is_unexpected_request_and_closes(pair):
    a, b = pair
    await raw_iq(a, b.boundjid.full, open_("s2"))
    stream = await b.plugin["xfer_ibb"].accept(5)
    await raw_iq(a, b.boundjid.full, data("s2", 0, b"first"))
    condition = await error_of(a, b.boundjid.full, data("s2", 2, b"skipped one"))
    assert condition == "unexpected-request"
    # The stream is gone: what was received before is still readable, then the error.
    assert await stream.read() == b"first"
    with pytest.raises(Exception, match="seq"):
        await stream.read()
    assert (
        await error_of(a, b.boundjid.full, data("s2", 1, b"late")) == "item-not-found"
    )


async def test_oversized_block_is_not_acceptable(pair):
    a, b = pair
    await raw_iq(a, b.boundjid.full, open_("s3", block_size=4096))
    payload = os.urandom(4097)
    assert (
        await error_of(a, b.boundjid.full, data("s3", 0, payload)) == "not-acceptable"
    )


async def test_a_block_size_above_ours_is_resource_constraint(prosody, pair):
    a, _ = pair
    small = await client(prosody, "carol", "small", max_block_size=4096)
    try:
        condition = await error_of(a, small.boundjid.full, open_("s4", block_size=8192))
        assert condition == "resource-constraint"
    finally:
        await small.stop()


async def test_a_reader_that_stops_reading_stalls_the_sender(pair):
    a, b = pair
    payload = os.urandom(8 << 20)
    out = await a.plugin["xfer_ibb"].open(b.boundjid.full, block_size=32768, window=4)
    inp = await b.plugin["xfer_ibb"].accept(5)

    async def send() -> None:
        await out.write(payload)
        await out.close()

    sending = asyncio.ensure_future(send())
    await asyncio.sleep(1.5)
    assert not sending.done()  # blocked by the unread receiver
    # Bounded on both sides: the receiver holds at most its buffer plus the
    # window; the sender has at most a window in flight.
    assert inp._buffered <= inp._max_buffer + 4 * 32768
    assert out._sender.in_flight <= 4
    received = bytearray()
    while chunk := await inp.read():
        received += chunk
    await sending
    assert bytes(received) == payload


async def test_our_sender_to_slixmpps_receiver(prosody):
    a = await client(prosody, "alice", "ours")
    theirs = await slixmpp_peer(prosody, "slixmpp")
    theirs.register_plugin("xep_0047", {"auto_accept": True, "max_block_size": 65535})
    started: asyncio.Future = asyncio.get_running_loop().create_future()
    theirs.add_event_handler("ibb_stream_start", started.set_result)
    try:
        payload = os.urandom(3 << 20)
        out = await a.plugin["xfer_ibb"].open(theirs.boundjid.full, block_size=65535)
        stream = await asyncio.wait_for(started, 5)
        gathering = asyncio.ensure_future(stream.gather(timeout=60))
        await out.write(payload)
        await out.close()
        got = await gathering
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        await a.stop()
        await theirs.stop()


async def test_slixmpps_sender_to_our_receiver(prosody):
    a = await client(prosody, "alice", "ours2")
    theirs = await slixmpp_peer(prosody, "slixmpp2")
    theirs.register_plugin("xep_0047")
    try:
        payload = os.urandom(1 << 20)
        stream = await theirs.plugin["xep_0047"].open_stream(
            a.boundjid.full, block_size=8192
        )
        inp = await a.plugin["xfer_ibb"].accept(5)

        async def send() -> None:
            await stream.sendall(payload)
            await stream.close()

        sending = asyncio.ensure_future(send())  # stop-and-wait: read meanwhile
        received = bytearray()
        while chunk := await inp.read():
            received += chunk
        await sending
        assert bytes(received) == payload
    finally:
        await a.stop()
        await theirs.stop()


async def test_a_hostile_sid_cannot_inject_stanzas(pair, prosody):
    a, b = pair
    evil = "x'/><message to='carol@xfer.test'><body>injected</body></message><iq id='y"
    opening = (
        f"<open xmlns='{NS}' sid=\"{evil.replace('<', '&lt;')}\" block-size='4096'/>"
    )
    await raw_iq(a, b.boundjid.full, opening)
    stream = await b.plugin["xfer_ibb"].accept(5)
    assert stream.sid == evil
    got: list[str] = []
    a.add_event_handler("message", lambda m: got.append(str(m)))
    await stream.close(timeout=5)  # answered by a with item-not-found: fine
    await asyncio.sleep(0.3)
    assert b.is_connected()  # our stream was not broken by a stray </iq>
    assert not any("injected" in m for m in got)


async def test_a_non_numeric_seq_is_refused_not_crashing(pair):
    a, b = pair
    await raw_iq(a, b.boundjid.full, open_("s5"))
    bad = (
        f"<data xmlns='{NS}' sid='s5' seq='x'>{base64.b64encode(b'a').decode()}</data>"
    )
    assert await error_of(a, b.boundjid.full, bad) == "unexpected-request"


async def read_forever(stream) -> None:
    while True:
        await stream.read()


async def test_empty_packets_cannot_grow_the_deferred_acks(prosody):
    a = await client(prosody, "alice", "flooder")
    b = await client(prosody, "bob", "flooded", window=2, block_size=4096)
    try:
        await raw_iq(a, b.boundjid.full, open_("s6", block_size=4096))
        stream = await b.plugin["xfer_ibb"].accept(5)
        # Fill the receive buffer (nobody reads), then send empty packets
        # without waiting for their acknowledgements.
        full = stream._max_buffer // 4096  # these are still acknowledged
        for seq in range(full):
            await raw_iq(a, b.boundjid.full, data("s6", seq, os.urandom(4096)))
        sends = []
        for seq in range(full, full + 21):  # one more full packet, then empty ones
            payload = os.urandom(4096) if seq == full else b""
            iq = a.make_iq_set(ito=b.boundjid.full)
            iq.xml.append(ET.fromstring(data("s6", seq, payload)))
            sends.append(asyncio.ensure_future(iq.send(timeout=10)))
        results = await asyncio.gather(*sends, return_exceptions=True)
        assert any(isinstance(r, IqError) for r in results)
        assert len(stream._deferred_acks) <= 2 * 2
        with pytest.raises(TransportError, match="flow control"):
            await read_forever(stream)
    finally:
        await a.stop()
        await b.stop()
