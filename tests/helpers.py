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
    file_id: bytes | None = None,
    chunk_size: int = 65536,
    size: int = 1,
    name: str = "a",
    **extra: Any,
) -> TransferOffer:
    """A valid suite 1 offer: version 1 if ``sha256`` is given, else version
    2 (what xfer sends). The transfer id, salt and file id are random (all
    zero bytes if ``zeroed``) unless given; ``extra``: the other fields."""
    fill = bytes if zeroed else os.urandom
    ids: dict[str, bytes] = (
        {"sha256": sha256}
        if sha256 is not None
        else {"file_id": fill(32) if file_id is None else file_id}
    )
    return TransferOffer(
        transfer_id=fill(16) if transfer_id is None else transfer_id,
        salt=fill(32) if salt is None else salt,
        suite=1,
        chunk_size=chunk_size,
        size=size,
        name=name,
        **ids,
        **extra,
    )
