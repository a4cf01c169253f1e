"""``XferClient`` without a server: failures to connect become typed errors,
and a dropped connection is retried only while the client is wanted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import struct
from typing import TYPE_CHECKING

import pytest

from xfer.errors import AuthenticationFailed, ServerUnreachable, TLSNotOffered
from xfer.xmpp import transfer as transfer_module
from xfer.xmpp.client import XferClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

JID = "me@localhost/test"


@pytest.fixture
async def client() -> AsyncIterator[XferClient]:
    made = XferClient(JID, "secret", tls="none", reconnect=True)
    yield made
    made.abort()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tls_settings() -> None:
    plain = XferClient(JID, "pw", tls="none")
    assert (plain.enable_plaintext, plain.enable_starttls) == (True, False)
    direct = XferClient(JID, "pw", tls="direct", verify_tls=False)
    assert direct.enable_direct_tls
    assert direct.ssl_context.verify_mode is ssl.CERT_NONE
    assert "xep_0198" in direct.plugin
    # Direct TLS has its own port (XEP-0368's usual 5223) when none is given.
    assert (direct.default_port, plain.default_port) == (5223, 5222)


async def test_a_ca_file_replaces_the_system_store(tmp_path: Path) -> None:
    from xfer.testing.certs import CertificateAuthority

    ca = CertificateAuthority("private CA").write(tmp_path / "ca.pem")
    private = XferClient(JID, "pw", ca_file=ca)
    assert private.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert private.ssl_context.check_hostname
    subjects = [dict(c["subject"][0]) for c in private.ssl_context.get_ca_certs()]
    assert subjects == [{"commonName": "private CA"}]


async def test_a_closed_port_is_unreachable(client: XferClient) -> None:
    with pytest.raises(ServerUnreachable, match="cannot connect"):
        await client.start("127.0.0.1", closed_port(), timeout=5)


async def test_a_silent_server_is_unreachable(client: XferClient) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ServerUnreachable, match="did not answer"):
            await client.start("127.0.0.1", port, timeout=0.3)
        assert accepted  # it did connect; the server just never spoke
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_refused_password_is_authentication_failed(
    client: XferClient,
) -> None:
    client.connect = lambda **_: None  # type: ignore[method-assign]
    starting = asyncio.ensure_future(client.start("127.0.0.1", 1, timeout=5))
    await asyncio.sleep(0)
    client.event("failed_all_auth")
    with pytest.raises(AuthenticationFailed, match="me@localhost"):
        await starting


async def test_a_drop_after_the_start_reconnects_until_stopped(
    client: XferClient,
) -> None:
    calls: list[tuple[str | None, int]] = []
    client.connect = lambda host=None, port=0: calls.append((host, port))  # type: ignore[method-assign,assignment,misc]
    starting = asyncio.ensure_future(client.start("127.0.0.1", 5999, timeout=5))
    await asyncio.sleep(0)
    client.send_presence = lambda **_: None  # type: ignore[method-assign]
    client.event("session_start")
    await starting
    client.event("disconnected")
    assert calls == [("127.0.0.1", 5999), ("127.0.0.1", 5999)]
    # slixmpp aborts by itself when the server ends the stream (a stream
    # error, say): that is no reason to stay away.
    client.disconnect_reason = "End of stream"
    client.abort()
    client.event("disconnected")
    assert len(calls) == 3
    # Told to go (our own abort), it stays gone.
    client.disconnect_reason = None
    client.abort()
    client.event("disconnected")
    assert len(calls) == 3


async def test_two_clients_of_one_installation_are_two_otr_instances(
    tmp_path: Path,
) -> None:
    """``xfer receive`` and ``xfer verify`` of one account run at once: one
    identity directory, one long-term key, but each its own instance tag, so
    that a peer addressing the bare JID keeps their sessions apart."""
    tags, keys = set(), set()
    for resource in ("receive", "verify", "phone"):
        made = XferClient(f"me@localhost/{resource}", "pw", tls="none")
        made.register_plugin(
            "xfer_transfer", {"identity": tmp_path / "id"}, module=transfer_module
        )
        account = made.plugin["xfer_otr"].account
        tags.add(account.our_tag)
        keys.add(account.private_key.public.fingerprint)
        assert 0x100 <= account.our_tag <= 0xFFFFFFFF
    assert len(tags) == 3
    assert len(keys) == 1
    assert not (tmp_path / "id" / "instance-tag").exists()


async def test_a_server_that_strips_starttls_never_gets_the_password() -> None:
    """A server (or a man in the middle) that offers PLAIN and no STARTTLS:
    TLSNotOffered at once, and no <auth/> (no password) on the wire."""
    received = bytearray()
    done = asyncio.Event()

    async def strip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while b">" not in received.partition(b"<stream:stream")[2]:
            chunk = await reader.read(4096)  # up to the end of the stream header
            if not chunk:
                return
            received.extend(chunk)
        writer.write(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='s' "
            b"from='localhost' version='1.0'><stream:features>"
            b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        )
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(4096):
                received.extend(chunk)
        done.set()
        writer.close()

    server = await asyncio.start_server(strip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = XferClient(JID, "the-password", tls="starttls")
    try:
        with pytest.raises(TLSNotOffered, match="offers no TLS"):
            await client.start("127.0.0.1", port, timeout=5)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        client.abort()
        server.close()
        await server.wait_closed()
    assert b"stream" in received  # it spoke XMPP to us
    assert b"auth" not in received
    assert b"the-password" not in received
    assert base64.b64encode(b"\x00me\x00the-password") not in received


async def test_a_port_that_resets_the_tls_handshake_offers_no_tls() -> None:
    """Direct TLS to a port that takes the ClientHello and resets the
    connection (a plain port that closed on unread bytes): TLSNotOffered,
    not "cannot connect"."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello has come
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: an RST

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = XferClient(JID, "pw", tls="direct")
    try:
        with pytest.raises(TLSNotOffered, match="does not speak direct TLS"):
            await client.start("127.0.0.1", port, timeout=5)
    finally:
        client.abort()
        server.close()
        await server.wait_closed()
