"""Thin asyncio adapters: the only places in xfer (besides xfer.xmpp) with I/O."""

from __future__ import annotations

from xfer.aio.files import (
    READ_SIZE,
    AtomicWriter,
    ProgressCallback,
    open_file,
    open_stream_to_file,
    read_chunks,
    seal_file,
)

__all__ = [
    "READ_SIZE",
    "AtomicWriter",
    "ProgressCallback",
    "open_file",
    "open_stream_to_file",
    "read_chunks",
    "seal_file",
]
