"""OTR v3 TLVs (Protocol-v3, "Type/Length/Value"): the records a data
message carries after its text, and the types the session handles itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfer.otr.data import encode_short

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "TLV_DISCONNECTED",
    "TLV_EXTRA_SYMMETRIC_KEY",
    "TLV_PADDING",
    "decode_tlvs",
    "encode_tlvs",
]

TLV_PADDING = 0
TLV_DISCONNECTED = 1
TLV_EXTRA_SYMMETRIC_KEY = 8


def encode_tlvs(tlvs: Iterable[tuple[int, bytes]]) -> bytes:
    """``SHORT type || SHORT length || value`` for each TLV."""
    return b"".join(encode_short(t) + encode_short(len(v)) + v for t, v in tlvs)


def decode_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Parse TLVs; a truncated trailing TLV ends the list (as libotr does)."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        kind = int.from_bytes(data[pos : pos + 2], "big")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos + 4 + length > len(data):
            break
        out.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out
