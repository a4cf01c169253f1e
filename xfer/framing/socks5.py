"""The SOCKS5 handshake as XEP-0065 uses it (RFC 1928 subset), sans-I/O.

XEP-0065 section 5.3 uses SOCKS5 without authentication (method 0x00) and
with one CONNECT request whose address is a *domain name* (ATYP 0x03): the
40 lower-case hex digits of ``SHA-1(sid || requester JID || target JID)``,
port 0. A streamhost (the requester itself, or a proxy) matches the incoming
connection to the stream by that address. Nothing else of SOCKS5 is needed,
and nothing else is accepted.

Both machines take bytes with ``receive_data`` (any split, a byte at a time
included) and return the bytes to send; ``done`` says the handshake is over,
after which everything on the connection is the stream's payload (the
machine hands back any payload bytes that came with the last handshake
message as ``leftover``).
"""

from __future__ import annotations

import enum
import hashlib
from typing import TYPE_CHECKING

from xfer.errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Socks5Client", "Socks5Server", "dst_addr"]

VERSION = 5
NO_AUTH = 0x00
NO_ACCEPTABLE = 0xFF
CONNECT = 0x01
ATYP_DOMAIN = 0x03
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ATYP_NOT_SUPPORTED = 0x08


def dst_addr(sid: str, requester: str, target: str) -> bytes:
    """XEP-0065's DST.ADDR: hex SHA-1 of sid, requester and target full JIDs."""
    return (
        hashlib.sha1(  # noqa: S324 - XEP-0065 mandates SHA-1 here (not security)
            (sid + requester + target).encode("utf-8")
        )
        .hexdigest()
        .encode("ascii")
    )


def _request(command_or_reply: int, address: bytes) -> bytes:
    return (
        bytes([VERSION, command_or_reply, 0, ATYP_DOMAIN, len(address)])
        + address
        + b"\x00\x00"
    )


class _Step(enum.Enum):
    METHOD = "method"
    REQUEST = "request"
    DONE = "done"
    FAILED = "failed"


class Socks5Client:
    """The connecting side: greets, then asks to CONNECT to ``address``."""

    def __init__(self, address: bytes) -> None:
        if not 0 < len(address) < 256:
            raise LocalProtocolError("a SOCKS5 domain address is 1 to 255 bytes")
        self.address = address
        self._step = _Step.METHOD
        self._buffer = bytearray()
        self.leftover = b""

    @property
    def done(self) -> bool:
        return self._step is _Step.DONE

    def initial(self) -> bytes:
        """The greeting to send first: version 5, one method, no auth."""
        return bytes([VERSION, 1, NO_AUTH])

    def receive_data(self, data: bytes) -> bytes:
        """Take server bytes; return what to send next (maybe nothing).

        Raises:
            RemoteProtocolError: the server refused or spoke something else.
        """
        if self._step in (_Step.DONE, _Step.FAILED):
            raise LocalProtocolError("the handshake is over")
        self._buffer += data
        if self._step is _Step.METHOD:
            if len(self._buffer) < 2:
                return b""
            version, method = self._buffer[0], self._buffer[1]
            del self._buffer[:2]
            if version != VERSION or method != NO_AUTH:
                self._step = _Step.FAILED
                raise RemoteProtocolError(
                    "the SOCKS5 server refused the no-auth method"
                )
            self._step = _Step.REQUEST
            out = _request(CONNECT, self.address)
            return out + self.receive_data(b"") if self._buffer else out
        # The reply mirrors the request: 5 + address + 2 bytes.
        if len(self._buffer) < 5:
            return b""
        version, rep, _rsv, atyp, length = self._buffer[:5]
        if version != VERSION:
            self._step = _Step.FAILED
            raise RemoteProtocolError("not a SOCKS5 reply")
        if rep != REP_SUCCEEDED:
            self._step = _Step.FAILED
            raise RemoteProtocolError(
                f"the SOCKS5 server refused the connection (code {rep})"
            )
        if atyp != ATYP_DOMAIN:
            self._step = _Step.FAILED
            raise RemoteProtocolError("the SOCKS5 reply has an unexpected address type")
        end = 5 + length + 2
        if len(self._buffer) < end:
            return b""
        self.leftover = bytes(self._buffer[end:])
        self._buffer.clear()
        self._step = _Step.DONE
        return b""


class Socks5Server:
    """The streamhost side: accepts no-auth and a CONNECT it recognises.

    Args:
        accept: called with the requested address; True lets it through.
    """

    def __init__(self, accept: Callable[[bytes], bool]) -> None:
        self._accept = accept
        self._step = _Step.METHOD
        self._buffer = bytearray()
        self.address: bytes | None = None
        self.leftover = b""
        #: What to send before closing after a refused handshake.
        self.refusal = b""

    @property
    def done(self) -> bool:
        return self._step is _Step.DONE

    def receive_data(self, data: bytes) -> bytes:
        """Take client bytes; return the reply bytes to send.

        Raises:
            RemoteProtocolError: the client asked for something else; the
                reply to send before closing is in :attr:`refusal`.
        """
        if self._step in (_Step.DONE, _Step.FAILED):
            raise LocalProtocolError("the handshake is over")
        self._buffer += data
        out = b""
        if self._step is _Step.METHOD:
            if len(self._buffer) < 2:
                return b""
            version, count = self._buffer[0], self._buffer[1]
            if version != VERSION:
                return self._fail(b"", "not a SOCKS5 greeting")
            if len(self._buffer) < 2 + count:
                return b""
            methods = bytes(self._buffer[2 : 2 + count])
            del self._buffer[: 2 + count]
            if NO_AUTH not in methods:
                return self._fail(
                    bytes([VERSION, NO_ACCEPTABLE]), "no acceptable method"
                )
            out = bytes([VERSION, NO_AUTH])
            self._step = _Step.REQUEST
        if len(self._buffer) < 5:
            return out
        version, command, _rsv, atyp, length = self._buffer[:5]
        if version != VERSION:
            return self._fail(out, "not a SOCKS5 request")
        if command != CONNECT:
            return self._fail(
                out + _request(REP_COMMAND_NOT_SUPPORTED, b"x"), "not CONNECT"
            )
        if atyp != ATYP_DOMAIN:
            return self._fail(
                out + _request(REP_ATYP_NOT_SUPPORTED, b"x"), "not a domain"
            )
        end = 5 + length + 2
        if len(self._buffer) < end:
            return out
        address = bytes(self._buffer[5 : 5 + length])
        self.leftover = bytes(self._buffer[end:])
        self._buffer.clear()
        if not self._accept(address):
            return self._fail(
                out + _request(REP_NOT_ALLOWED, address), "unknown address"
            )
        self.address = address
        self._step = _Step.DONE
        return out + _request(REP_SUCCEEDED, address)

    def _fail(self, reply: bytes, why: str) -> bytes:
        self._step = _Step.FAILED
        self.refusal = reply
        raise RemoteProtocolError(f"SOCKS5 handshake refused: {why}")
