"""xfer.aio.socks5's client side over real loopback sockets, without XMPP."""

from __future__ import annotations

import asyncio
import os

import pytest

from xfer.aio.socks5 import connect_streamhost, parse_port
from xfer.errors import ConnectionFailed, RemoteProtocolError
from xfer.framing.socks5 import dst_addr

ADDR = dst_addr("sid", "a@x/1", "b@x/2")


async def streamhost(reply: bytes):
    """A streamhost that answers the handshake with ``reply`` in one write."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readexactly(3)  # greeting
        writer.write(b"\x05\x00")
        await reader.readexactly(5 + 40 + 2)  # request
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_payload_sent_with_the_reply_stays_in_order():
    payload = os.urandom(10240)
    server, port = await streamhost(
        b"\x05\x00\x00\x03\x28" + ADDR + b"\x00\x00" + payload
    )
    async with server:
        connection = await connect_streamhost("127.0.0.1", port, ADDR, 5)
        received = bytearray()
        while piece := await connection.read():
            received += piece
        connection.close()
        await connection.wait_closed()
    assert received == payload


async def test_a_refusal_is_a_remote_protocol_error():
    server, port = await streamhost(b"\x05\x02\x00\x03\x28" + ADDR + b"\x00\x00")
    async with server:
        with pytest.raises(RemoteProtocolError, match="refused"):
            await connect_streamhost("127.0.0.1", port, ADDR, 5)


async def test_a_streamhost_that_hangs_up_is_connection_failed():
    server, port = await streamhost(b"\x05")
    async with server:
        with pytest.raises(ConnectionFailed):
            await connect_streamhost("127.0.0.1", port, ADDR, 5)


@pytest.mark.parametrize("text", ["0", "65536", "99999", "-1", "x", ""])
def test_bad_ports_are_remote_errors(text):
    if text == "":
        assert parse_port(text) == 1080  # the XEP's default
        return
    with pytest.raises(RemoteProtocolError):
        parse_port(text)
