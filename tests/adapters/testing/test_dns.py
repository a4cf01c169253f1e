"""The test DNS responder (xfer.testing.dns), asked by a real resolver
(c-ares, through aiodns) over UDP on loopback."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import aiodns
import pytest

from xfer.testing.dns import FORMERR, NXDOMAIN, Zone, answer, parse_zone

ZONES = ["a.test=10.1.2.3:5333:5270", "b.test=10.1.2.4"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "xfer.testing.dns", "127.0.0.1", *ZONES]
    process = subprocess.Popen(
        [*argv, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.communicate()


def resolver(server: str) -> aiodns.DNSResolver:
    return aiodns.DNSResolver(nameservers=[server], timeout=2, tries=1)


async def test_the_domain_and_every_name_under_it_have_the_servers_address(
    server: str,
) -> None:
    for name, address in [
        ("a.test", "10.1.2.3"),
        ("proxy.a.test", "10.1.2.3"),
        ("PROXY.A.TEST", "10.1.2.3"),
        ("b.test", "10.1.2.4"),
    ]:
        [record] = (await resolver(server).query_dns(name, "A")).answer
        assert record.data.addr == address


async def test_srv_records_point_to_the_c2s_and_s2s_ports(server: str) -> None:
    r = resolver(server)
    for name, target, port in [
        ("_xmpp-client._tcp.a.test", "a.test", 5333),
        ("_xmpp-server._tcp.a.test", "a.test", 5270),
        ("_xmpp-server._tcp.proxy.a.test", "proxy.a.test", 5270),
        ("_xmpp-server._tcp.b.test", "b.test", 5269),
    ]:
        [record] = (await r.query_dns(name, "SRV")).answer
        assert (record.data.target, record.data.port) == (target, port)


async def test_other_names_do_not_exist_and_other_types_are_empty(
    server: str,
) -> None:
    r = resolver(server)
    with pytest.raises(aiodns.error.DNSError) as missing:
        await r.query_dns("c.test", "A")
    assert missing.value.args[0] == aiodns.error.ARES_ENOTFOUND
    with pytest.raises(aiodns.error.DNSError) as empty:
        await r.query_dns("a.test", "AAAA")
    assert empty.value.args[0] == aiodns.error.ARES_ENODATA
    with pytest.raises(aiodns.error.DNSError) as other:
        await r.query_dns("_xmpps-client._tcp.a.test", "SRV")
    assert other.value.args[0] == aiodns.error.ARES_ENODATA


def _query(name: bytes, flags: int = 0x0100, count: int = 1) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, count, 0, 0, 0) + name + b"\0\1\0\1"


def test_malformed_queries_get_formerr_or_nothing() -> None:
    zones = [Zone("a.test", "10.1.2.3")]
    assert answer(b"\x12\x34\x01", zones) is None  # shorter than a header
    assert answer(_query(b"\1a\0", flags=0x8000), zones) is None  # a response
    for bad in (
        _query(b"\xc0\x0c"),  # a compression pointer in the question
        _query(b"\x05ab"),  # a label running past the end
        _query(b"\1a\0", count=2),  # two questions
    ):
        reply = answer(bad, zones)
        assert reply is not None
        assert reply[:2] == b"\x12\x34"
        assert struct.unpack("!H", reply[2:4])[0] & 0x000F == FORMERR
    reply = answer(_query(b"\1a\4test\0"), zones)
    assert reply is not None
    assert struct.unpack("!HHHH", reply[2:10]) == (0x8500, 1, 1, 0)
    unknown = answer(_query(b"\1c\4test\0"), zones)
    assert unknown is not None
    assert struct.unpack("!H", unknown[2:4])[0] & 0x000F == NXDOMAIN


def test_zones_are_read_from_the_command_line_form() -> None:
    assert parse_zone("A.Test.=10.0.0.1:1:2") == Zone("a.test", "10.0.0.1", 1, 2)
    assert parse_zone("b.test=10.0.0.2") == Zone("b.test", "10.0.0.2", 5222, 5269)
    with pytest.raises(ValueError, match="octets"):
        parse_zone("c.test=not-an-address")
