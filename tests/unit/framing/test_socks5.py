from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.framing.socks5 import Socks5Client, Socks5Server, dst_addr

ADDR = dst_addr("sid1", "alice@example.org/a", "bob@example.org/b")


def test_dst_addr_is_hex_sha1_of_sid_and_jids():
    expected = hashlib.sha1(b"sid1alice@example.org/abob@example.org/b").hexdigest()
    assert expected.encode() == ADDR
    assert len(ADDR) == 40


def run(client: Socks5Client, server: Socks5Server, split: int) -> None:
    """Both machines talk, every message cut into pieces of ``split`` bytes."""
    to_server = client.initial()
    while not (client.done and server.done):
        to_client = b""
        for i in range(0, len(to_server), split):
            to_client += server.receive_data(to_server[i : i + split])
        to_server = b""
        for i in range(0, len(to_client), split):
            to_server += client.receive_data(to_client[i : i + split])


@given(split=st.integers(1, 60))
def test_handshake_at_every_split(split):
    client = Socks5Client(ADDR)
    server = Socks5Server(lambda a: a == ADDR)
    run(client, server, split)
    assert server.address == ADDR


def test_exact_wire_bytes():
    client = Socks5Client(ADDR)
    server = Socks5Server(lambda a: True)
    assert client.initial() == b"\x05\x01\x00"
    assert server.receive_data(b"\x05\x01\x00") == b"\x05\x00"
    request = client.receive_data(b"\x05\x00")
    assert request == b"\x05\x01\x00\x03\x28" + ADDR + b"\x00\x00"
    reply = server.receive_data(request)
    assert reply == b"\x05\x00\x00\x03\x28" + ADDR + b"\x00\x00"
    assert client.receive_data(reply + b"payload") == b""
    assert client.done
    assert client.leftover == b"payload"


def test_an_unknown_address_is_refused():
    client = Socks5Client(ADDR)
    server = Socks5Server(lambda a: False)
    server.receive_data(client.initial())
    with pytest.raises(RemoteProtocolError, match="unknown address"):
        server.receive_data(client.receive_data(b"\x05\x00"))
    assert server.refusal.startswith(b"\x05\x02")  # connection not allowed
    with pytest.raises(RemoteProtocolError, match="refused"):
        client.receive_data(server.refusal)


@pytest.mark.parametrize(
    ("greeting", "match"),
    [(b"\x04\x01\x00", "greeting"), (b"\x05\x01\x02", "method")],
)
def test_bad_greetings_are_refused(greeting, match):
    server = Socks5Server(lambda a: True)
    with pytest.raises(RemoteProtocolError, match=match):
        server.receive_data(greeting)


def test_only_connect_to_a_domain_is_spoken():
    for request, match in [
        (b"\x05\x02\x00\x03\x01x\x00\x00", "CONNECT"),
        (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", "domain"),
    ]:
        server = Socks5Server(lambda a: True)
        server.receive_data(b"\x05\x01\x00")
        with pytest.raises(RemoteProtocolError, match=match):
            server.receive_data(request)


def test_the_client_refuses_a_server_without_no_auth():
    client = Socks5Client(ADDR)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\x05\xff")
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        Socks5Client(b"")


@given(junk=st.binary(max_size=80))
def test_any_bytes_either_progress_or_raise_a_remote_error(junk):
    server = Socks5Server(lambda a: True)
    with contextlib.suppress(RemoteProtocolError):
        server.receive_data(junk)
