"""Crafted SMP messages for tests and benchmarks: the layout of each SMP
TLV's values and its payload encoding, to build valid or hostile ones."""

from __future__ import annotations

from xfer.otr.data import encode_int, encode_mpi
from xfer.otr.smp import TLV_SMP1, TLV_SMP2, TLV_SMP3, TLV_SMP4

#: The values of each SMP TLV, in order: "g" a group element, "c" a
#: challenge (a hash), "d" an exponent mod q.
LAYOUTS = {
    TLV_SMP1: "gcdgcd",
    TLV_SMP2: "gcdgcdggcdd",
    TLV_SMP3: "ggcddgcd",
    TLV_SMP4: "gcd",
}
#: A valid value of each kind: 4 = 2^2 is in the subgroup of order q.
FILLER = {"g": 4, "c": 1, "d": 1}


def filler(kind: int) -> list[int]:
    """Valid values (no valid proof) for every place of SMP TLV ``kind``."""
    return [FILLER[letter] for letter in LAYOUTS[kind]]


def smp_payload(values: list[int]) -> bytes:
    """An SMP TLV's payload: the count, then each value as an MPI."""
    return encode_int(len(values)) + b"".join(encode_mpi(v) for v in values)
