"""Which suite to seal with on this machine: the one whose MAC is faster here.

Both suites encrypt with AES-256-CTR and differ only in the HMAC (SHA-512 or
SHA-256, ``spec/envelope.md``), which is the larger share of the cost per
byte. Which hash is faster depends on the CPU: SHA-512 works on 64-bit words
and wins on CPUs without hash instructions, while CPUs with SHA-256
instructions (x86 SHA-NI, ARMv8 SHA2) run SHA-256 two to three times faster
than SHA-512. Rather than guess from CPU flags (which differ by architecture
and are hidden in some virtual machines), :func:`fastest_suite` measures both
MACs on a 1 MiB buffer, best of three, once per process: a few milliseconds,
less than reading the CPU's flags and far less than a transfer; the answer is
kept for the life of the process, not on disk, so that a moved identity
directory or a changed machine cannot carry a stale choice.

Both suites are equally safe (HMAC-SHA-256 tags truncated to 16 bytes as
well); a receiver opens either, since the suite is in the header and in the
offer.
"""

from __future__ import annotations

import functools
import time

from cryptography.hazmat.primitives import hashes, hmac

from xfer.envelope.format import Suite

__all__ = ["fastest_suite", "mac_seconds"]

_SAMPLE = 1 << 20
_ROUNDS = 3
_HASHES: dict[Suite, type[hashes.HashAlgorithm]] = {
    Suite.AES256_CTR_HMAC_SHA512: hashes.SHA512,
    Suite.AES256_CTR_HMAC_SHA256: hashes.SHA256,
}


def mac_seconds(suite: Suite, *, size: int = _SAMPLE, rounds: int = _ROUNDS) -> float:
    """The best of ``rounds`` timings of the suite's HMAC over ``size`` bytes."""
    data = bytes(size)
    key = bytes(64)
    best = float("inf")
    for _ in range(rounds):
        mac = hmac.HMAC(key, _HASHES[suite]())
        started = time.perf_counter()
        mac.update(data)
        mac.finalize()
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def fastest_suite() -> Suite:
    """The suite whose MAC is faster on this machine (measured once)."""
    return min(_HASHES, key=mac_seconds)
