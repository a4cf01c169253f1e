"""This host's own IP addresses, for direct SOCKS5 candidates, and the
socket of our streamhost.

No dependency beyond the standard library:

* on Linux, IPv4 addresses come from the ``SIOCGIFCONF`` ioctl (every
  address of every interface that is up, aliases included) and IPv6
  addresses from ``/proc/net/if_inet6`` (tentative, duplicate and
  deprecated ones left out);
* elsewhere, or if those fail, only the address each family would use to
  reach the Internet: a UDP socket "connected" to a documentation address
  (RFC 5737, RFC 3849) names its source address without sending anything.

Which of these to offer, and in which order, is
:func:`xfer.jingle.candidates.offer_order`'s decision.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
from pathlib import Path

__all__ = ["interface_addresses", "route_addresses", "streamhost_socket"]

_SIOCGIFCONF = 0x8912
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFNAMSIZ = 16
#: struct ifreq: a name, then a union whose largest member is 24 bytes on
#: 64-bit Linux and 16 on 32-bit.
_IFREQ = _IFNAMSIZ + (24 if struct.calcsize("P") == 8 else 16)
#: IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE (linux/if_addr.h).
_IFA_SKIP = 0x08 | 0x20 | 0x40
_IF_INET6 = Path("/proc/net/if_inet6")


def _ipv4_linux() -> list[str]:
    import array  # here: fcntl exists on Unix only
    import fcntl

    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        buf = array.array("B", bytes(_IFREQ * 128))
        pointer, _ = buf.buffer_info()
        request = struct.pack("iL", len(buf), pointer)
        length = struct.unpack("iL", fcntl.ioctl(s.fileno(), _SIOCGIFCONF, request))[0]
        raw = buf.tobytes()
        for offset in range(0, length, _IFREQ):
            name = raw[offset : offset + _IFNAMSIZ]
            family = struct.unpack_from("H", raw, offset + _IFNAMSIZ)[0]
            if family != socket.AF_INET:
                continue
            flags_request = name + bytes(_IFREQ - _IFNAMSIZ)
            with contextlib.suppress(OSError):
                flags = struct.unpack_from(
                    "H",
                    fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, flags_request),
                    _IFNAMSIZ,
                )[0]
                if not flags & _IFF_UP:
                    continue
            address = raw[offset + _IFNAMSIZ + 4 : offset + _IFNAMSIZ + 8]
            found.append(socket.inet_ntop(socket.AF_INET, address))
    return found


def _ipv6_linux() -> list[str]:
    found: list[str] = []
    for line in _IF_INET6.read_text().splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        hex_address, _index, _prefix, _scope, flags, name = fields[:6]
        if int(flags, 16) & _IFA_SKIP:
            continue
        ip = ipaddress.IPv6Address(bytes.fromhex(hex_address))
        found.append(f"{ip}%{name}" if ip.is_link_local else str(ip))
    return found


def route_addresses() -> list[str]:
    """The source address of each family's default route, if it has one
    (a UDP "connect": no packet is sent)."""
    found: list[str] = []
    for family, target in (
        (socket.AF_INET6, "2001:db8::1"),
        (socket.AF_INET, "192.0.2.1"),
    ):
        with (
            contextlib.suppress(OSError),
            socket.socket(family, socket.SOCK_DGRAM) as s,
        ):
            s.connect((target, 9))
            found.append(str(s.getsockname()[0]))
    return found


def interface_addresses() -> list[str]:
    """This host's IP addresses as text (IPv6 link-local ones with their
    ``%interface`` scope), loopback included; see the module's docstring
    for where they come from."""
    found: list[str] = []
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, ValueError, struct.error):
            found += _ipv4_linux()
        with contextlib.suppress(OSError, ValueError):
            found += _ipv6_linux()
    if not found:
        found = [*route_addresses(), "127.0.0.1", "::1"]
    return list(dict.fromkeys(found))


def streamhost_socket(port: int = 0) -> socket.socket:
    """A listening TCP socket on every address of this host, IPv4 and IPv6
    on one port (a dual-stack ``::`` socket; ``0.0.0.0`` without IPv6).

    Raises:
        OSError: the port is taken, or no socket could be made.
    """
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host = "0.0.0.0"  # noqa: S104 - our streamhost is for the peer to reach
    else:
        host = "::"
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
