"""Helpers shared by tests of several layers."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
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


#: Where the frozen copies of older modules are (each names its commit).
LEGACY = Path(__file__).resolve().parent / "legacy"


def old_module(name: str) -> types.ModuleType:
    """The frozen older module ``tests/legacy/<name>.py`` (for example
    ``transfer_offer``: ``xfer/transfer/offer.py`` before streams), loaded
    under a private name: to test what an older peer does with a newer
    peer's message. Its imports resolve to today's modules."""
    path = LEGACY / f"{name}.py"
    qualified = f"_old_{name}"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[qualified]
    return module
