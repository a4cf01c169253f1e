"""The small async interface every transport's stream implements.

A ByteStream carries bytes in both directions between two XMPP entities,
with backpressure both ways: ``write`` returns only when the transport has
room for more, and data is taken from the peer only as fast as ``read`` is
called. IBB (:mod:`xfer.xmpp.ibb`) and SOCKS5 streams implement it, and one
conformance suite (``tests/integration/test_bytestreams.py``) checks them all.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ByteStream", "ProgressCallback", "no_progress"]


class ProgressCallback(Protocol):
    """Called after each piece with the bytes done so far and the total if known."""

    def __call__(self, done: int, total: int | None) -> None: ...


def no_progress(done: int, total: int | None) -> None:
    """The default progress callback: does nothing."""


@runtime_checkable
class ByteStream(Protocol):
    #: The peer's full JID and the stream id.
    peer: str
    sid: str

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Up to ``max_bytes`` bytes, waiting for some; ``b""`` at the end.

        Raises:
            TransportError: the stream broke; data read before stays valid.
        """
        ...

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, waiting while the transport has no room.

        Raises:
            TransportError: the stream broke.
        """
        ...

    async def close(self) -> None:
        """Send what is pending, then end the stream (idempotent)."""
        ...

    def abort(self, reason: str = "aborted") -> None:
        """End the stream at once, without the closing handshake."""
        ...
