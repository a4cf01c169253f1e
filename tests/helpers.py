"""Helpers shared by tests of several layers."""

from __future__ import annotations

import os
from typing import Any

from xfer.transfer.offer import TransferOffer


def make_offer(
    *,
    zeroed: bool = False,
    transfer_id: bytes | None = None,
    salt: bytes | None = None,
    sha256: bytes | None = None,
    chunk_size: int = 65536,
    size: int = 1,
    name: str = "a",
    **extra: Any,
) -> TransferOffer:
    """A valid suite 1 offer. The transfer id, salt and hash are random (all
    zero bytes if ``zeroed``) unless given; ``extra``: the other fields."""
    fill = bytes if zeroed else os.urandom
    return TransferOffer(
        transfer_id=fill(16) if transfer_id is None else transfer_id,
        salt=fill(32) if salt is None else salt,
        suite=1,
        chunk_size=chunk_size,
        size=size,
        sha256=fill(32) if sha256 is None else sha256,
        name=name,
        **extra,
    )
