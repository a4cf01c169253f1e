"""Sealed streams in memory, for tests of the receiving pump."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tests.helpers import make_offer
from xfer.envelope import Sealer
from xfer.transfer.offer import TransferOffer


def offer_for(content: bytes) -> TransferOffer:
    """An offer of ``content`` as ``f.bin``, in 4096-byte chunks."""
    return make_offer(
        chunk_size=4096,
        size=len(content),
        sha256=hashlib.sha256(content).digest(),
        name="f.bin",
    )


def sealed_rest(offer: TransferOffer, key: bytes, rest: bytes = b"") -> bytes:
    """The sealed stream of ``offer`` that holds only ``rest``."""
    sealer = Sealer.announced(
        key, salt=offer.salt, transfer_id=offer.transfer_id, chunk_size=4096
    )
    return sealer.update(rest) + sealer.finalize()


class MemoryStream:
    """A ByteStream over bytes already received, read ``piece`` bytes at a
    time; ``on_read`` runs before the first read."""

    def __init__(
        self,
        data: bytes,
        piece: int = 7,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self._data = data
        self._piece = piece
        self._on_read = on_read

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        if self._on_read is not None:
            hook, self._on_read = self._on_read, None
            hook()
        n = min(max_bytes, self._piece)
        out, self._data = self._data[:n], self._data[n:]
        return out

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise AssertionError("the receiver writes nothing")

    async def close(self) -> None:
        pass

    def abort(self, reason: str = "aborted") -> None:
        pass
