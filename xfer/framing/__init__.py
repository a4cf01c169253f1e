"""Sans-I/O byte-stream framing for the transports (IBB, SOCKS5)."""

from __future__ import annotations
