"""xfer.aio.addresses: this host's addresses and our streamhost's socket."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import sys

import pytest

from xfer.aio.addresses import interface_addresses, route_addresses, streamhost_socket

linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="enumeration is Linux's here"
)


@linux
def test_the_addresses_are_those_iproute2_lists() -> None:
    if shutil.which("ip") is None:
        pytest.skip("no ip(8) to compare with")
    listed = json.loads(
        subprocess.run(
            ["ip", "-j", "addr"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    expected = set()
    for link in listed:
        if "UP" not in link.get("flags", []):
            continue
        for info in link.get("addr_info", []):
            if info.get("tentative") or info.get("dadfailed"):
                continue
            ip = ipaddress.ip_address(info["local"])
            scoped = ip.version == 6 and ip.is_link_local
            expected.add(f"{ip}%{link['ifname']}" if scoped else str(ip))
    found = interface_addresses()
    assert "127.0.0.1" in found
    assert len(found) == len(set(found))
    # Deprecated IPv6 addresses are left out on purpose; all else agrees.
    assert set(found) <= expected
    assert {a for a in expected if ":" not in a} <= set(found)


def test_route_addresses_are_this_hosts() -> None:
    for address in route_addresses():
        ip = ipaddress.ip_address(address)
        assert not ip.is_unspecified


def test_the_streamhost_socket_takes_ipv4_and_ipv6_on_one_port() -> None:
    with streamhost_socket() as server:
        port = server.getsockname()[1]
        server.setblocking(True)
        server.settimeout(5)
        targets = [(socket.AF_INET, "127.0.0.1")]
        if server.family == socket.AF_INET6 and socket.has_ipv6:
            targets.append((socket.AF_INET6, "::1"))
        for family, host in targets:
            with socket.socket(family) as client:
                if client.connect_ex((host, port)) != 0:
                    assert family == socket.AF_INET6  # no ::1 on this host
                    continue
                accepted, _ = server.accept()
                accepted.close()


def test_a_taken_port_is_an_error() -> None:
    with streamhost_socket() as first, pytest.raises(OSError, match="in use"):
        streamhost_socket(first.getsockname()[1]).close()
