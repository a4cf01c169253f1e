"""A tiny authoritative DNS responder for test domains (UDP, RFC 1035).

It knows only the zones it is given: for a zone ``a.test`` served at
10.0.0.2, the zone's name and every name under it (``proxy.a.test``...)
have that A record, ``_xmpp-server._tcp.<name>`` and
``_xmpp-client._tcp.<name>`` have SRV records pointing to ``<name>`` on
the zone's s2s and c2s ports (RFC 6120 section 3.2.1), any other type of
a known name is an empty answer, and every other name does not exist
(NXDOMAIN). That is what an XMPP server needs to find its peer and a
client its server, through the system's resolver, with no real DNS.

:mod:`xfer.testing.federation` runs it inside a network namespace, as::

    python -m xfer.testing.dns 0.0.0.0 a.test=10.0.0.2:5222:5269 ...

which prints ``ready`` once it listens on port 53 (``--port`` to change).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

__all__ = ["Zone", "answer", "parse_zone", "serve"]

A, AAAA, SRV = 1, 28, 33
CLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
TTL = 30


@dataclass(frozen=True)
class Zone:
    """A test domain: the address of its server, its c2s and s2s ports."""

    domain: str
    address: str
    c2s_port: int = 5222
    s2s_port: int = 5269

    def owns(self, name: str) -> bool:
        return name == self.domain or name.endswith("." + self.domain)


def parse_zone(text: str) -> Zone:
    """``domain=address[:c2s[:s2s]]``."""
    domain, _, rest = text.partition("=")
    address, *ports = rest.split(":")
    ipaddress.IPv4Address(address)  # raises ValueError if it is not one
    numbers = [int(p) for p in ports]
    return Zone(domain.lower().rstrip("."), address, *numbers)


def _name(packet: bytes, offset: int) -> tuple[str, int]:
    """The (uncompressed) name at ``offset`` and the offset after it."""
    labels: list[str] = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        if length > 63:  # a pointer or a reserved label type: not in questions
            raise ValueError("compressed name in a question")
        labels.append(packet[offset : offset + length].decode("ascii"))
        offset += length


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _records(zones: list[Zone], name: str, qtype: int) -> tuple[int, list[bytes]]:
    """The rcode and the answer records' (type, rdata) for one question."""
    zone = next((z for z in zones if z.owns(name)), None)
    if zone is None:
        return NXDOMAIN, []
    service, _, target = name.partition(".")
    if service in ("_xmpp-server", "_xmpp-client") and target.startswith("_tcp."):
        target = target.removeprefix("_tcp.")
        port = zone.s2s_port if service == "_xmpp-server" else zone.c2s_port
        if qtype != SRV or not zone.owns(target):
            return NOERROR, []
        rdata = struct.pack("!HHH", 0, 5, port) + _encode_name(target)
        return NOERROR, [struct.pack("!HHIH", SRV, CLASS_IN, TTL, len(rdata)) + rdata]
    if qtype == A:
        rdata = ipaddress.IPv4Address(zone.address).packed
        return NOERROR, [struct.pack("!HHIH", A, CLASS_IN, TTL, len(rdata)) + rdata]
    return NOERROR, []


def answer(query: bytes, zones: list[Zone]) -> bytes | None:
    """The response to one DNS query packet, or None to ignore it (too
    short, or itself a response)."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:
        return None
    opcode = flags & 0x7800
    base = 0x8000 | opcode | 0x0400 | (flags & 0x0100)  # QR, AA, RD copied

    def reply(rcode: int, question: bytes, records: list[bytes]) -> bytes:
        header = struct.pack(
            "!HHHHHH", ident, base | rcode, 1 if question else 0, len(records), 0, 0
        )
        pointer = b"\xc0\x0c"  # every answer is about the question's name
        return header + question + b"".join(pointer + r for r in records)

    if opcode != 0:
        return reply(NOTIMP, b"", [])
    if qdcount != 1:
        return reply(FORMERR, b"", [])
    try:
        name, end = _name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[end : end + 4])
    except (ValueError, IndexError, UnicodeDecodeError, struct.error):
        return reply(FORMERR, b"", [])
    question = query[12 : end + 4]
    if qclass != CLASS_IN:
        return reply(NXDOMAIN, question, [])
    rcode, records = _records(zones, name, qtype)
    return reply(rcode, question, records)


def serve(address: str, port: int, zones: list[Zone]) -> None:
    """Answer queries on UDP ``address``:``port`` until killed; print
    ``ready`` once listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, port))
        print("ready", flush=True)
        while True:
            query, peer = sock.recvfrom(4096)
            response = answer(query, zones)
            if response is not None:
                sock.sendto(response, peer)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m xfer.testing.dns")
    parser.add_argument("address")
    parser.add_argument("zones", nargs="+", metavar="DOMAIN=ADDRESS[:C2S[:S2S]]")
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    serve(args.address, args.port, [parse_zone(z) for z in args.zones])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
