"""Force each transport of a transfer, the way a real network would.

Used by the integration tests and the benchmarks: ``xfer_transfer`` options
under which a transfer between two clients on one machine must take the
named transport.

* ``socks5-direct``: no proxy candidates, so the peers' own streamhosts win;
* ``socks5-proxy``: the direct candidates advertise a closed loopback port
  (connections refused, as behind NAT), so only the server's proxy works;
* ``ibb``: the same without the proxy: XEP-0260 fails and the session
  falls back to In-Band Bytestreams with transport-replace.
"""

from __future__ import annotations

import socket

__all__ = ["KINDS", "closed_port", "forcing"]

KINDS = ("socks5-direct", "socks5-proxy", "ibb")


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forcing(kind: str) -> dict[str, object]:
    """``xfer_transfer`` config (for both peers) that forces ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown transport {kind!r}; one of {', '.join(KINDS)}")
    if kind == "socks5-direct":
        return {"socks5_proxy": False}
    unreachable = [("127.0.0.1", closed_port())]
    if kind == "socks5-proxy":
        return {"advertise": unreachable}
    return {"advertise": unreachable, "socks5_proxy": False}
