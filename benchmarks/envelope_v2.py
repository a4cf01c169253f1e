"""Envelope format version 2 beside version 1, and the cost of a flush.

    python benchmarks/envelope_v2.py [--mib 64] [--rounds 5] [--messages 20000]

In interleaved rounds, so that every figure sees the same noise of this
shared machine:

* seal and open of an in-memory buffer in 1 MiB pieces through
  ``update_into`` (as the file adapter feeds it), one thread, in version 1
  and in version 2 without a flush: the price of the chunk word on full
  chunks (ratio version 2 / version 1);
* a live stream of short messages (200 bytes, as in the issue's latency
  test): each one ``update`` + ``flush`` on the sealer and ``update`` on the
  opener, against the bare primitives for one such chunk (a fresh
  AES-256-CTR context, an HMAC copy, the same sizes) done with
  ``cryptography`` directly. From the per-message cost it derives the CPU
  share of a stream flushed every 10 ms.

Everything runs on the calling thread and is timed by that thread's CPU time
(``time.thread_time``), so that other processes on a shared machine do not
count. Figures are medians; MB = 10**6 bytes. It prints a table and writes
JSON (default ``benchmarks/results/envelope_v2.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any

import cryptography
from _common import add_json_option, write_report
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from xfer.aio.files import READ_SIZE
from xfer.envelope import Opener, Sealer, Suite

PIECE = READ_SIZE
MESSAGE = 200
FLUSH_INTERVAL_S = 0.010


def sealed_of(data: memoryview, version: int) -> memoryview:
    sealer = Sealer(bytes(32), version=version)
    return memoryview(sealer.update(data) + sealer.finalize())


def seal_speed(data: memoryview, version: int) -> float:
    sealer = Sealer(bytes(32), version=version)
    buf = bytearray(sealer.output_bound(PIECE))
    start = time.thread_time()
    for i in range(0, len(data), PIECE):
        sealer.update_into(data[i : i + PIECE], buf)
    sealer.finalize()
    return len(data) / (time.thread_time() - start) / 1e6


def open_speed(sealed: memoryview, size: int) -> float:
    opener = Opener(bytes(32))
    buf = bytearray(2 * PIECE)
    start = time.thread_time()
    for i in range(0, len(sealed), PIECE):
        opener.update_into(sealed[i : i + PIECE], buf)
    opener.finalize()
    return size / (time.thread_time() - start) / 1e6


def live_costs(messages: int) -> tuple[float, float]:
    """Microseconds per 200-byte message: (seal with a flush, open)."""
    sealer = Sealer(bytes(32), version=2)
    payload = os.urandom(MESSAGE)
    start = time.thread_time()
    wire = [sealer.update(payload) + sealer.flush() for _ in range(messages)]
    seal_us = (time.thread_time() - start) / messages * 1e6
    opener = Opener(bytes(32))
    start = time.thread_time()
    for chunk in wire:
        if len(opener.update(chunk)) != MESSAGE:
            raise RuntimeError("a message was not released at once")
    open_us = (time.thread_time() - start) / messages * 1e6
    return seal_us, open_us


def bare_chunk_cost(messages: int) -> float:
    """Microseconds per 200-byte chunk with cryptography alone: a CTR context
    at the chunk's counter, the encryption, and an HMAC-SHA-512 copied from
    a keyed prefix over index, flag, word and ciphertext."""
    payload = os.urandom(MESSAGE)
    prefix = hmac.HMAC(bytes(64), hashes.SHA512())
    prefix.update(bytes(58))
    start = time.thread_time()
    for i in range(messages):
        counter = bytes(8) + (i * 4096).to_bytes(8, "big")
        ct = Cipher(algorithms.AES(bytes(32)), modes.CTR(counter)).encryptor()
        ciphertext = ct.update(payload)
        mac = prefix.copy()
        mac.update(i.to_bytes(8, "big") + b"\x00" + MESSAGE.to_bytes(4, "big"))
        mac.update(ciphertext)
        mac.finalize()
    return (time.thread_time() - start) / messages * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="in-memory buffer size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    add_json_option(parser, "envelope_v2")
    args = parser.parse_args()

    data = memoryview(os.urandom(args.mib * PIECE))
    sealed = {v: sealed_of(data, v) for v in (1, 2)}
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        for version in (1, 2):
            add(f"v{version} seal", seal_speed(data, version))
            add(f"v{version} open", open_speed(sealed[version], len(data)))
        seal_us, open_us = live_costs(args.messages)
        add("live seal us", seal_us)
        add("live open us", open_us)
        add("bare chunk us", bare_chunk_cost(args.messages))
    med = {k: statistics.median(v) for k, v in samples.items()}
    live = med["live seal us"] + med["live open us"]
    bare = 2 * med["bare chunk us"]  # one chunk sealed, one opened
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "load_avg_1m": os.getloadavg()[0],
        },
        "params": {
            "mib": args.mib,
            "rounds": args.rounds,
            "messages": args.messages,
            "message_bytes": MESSAGE,
            "suite": Suite.AES256_CTR_HMAC_SHA512.label,
        },
        "full_chunks_mb_s": {
            op: {
                "v1": round(med[f"v1 {op}"]),
                "v2": round(med[f"v2 {op}"]),
                "v2_vs_v1": round(med[f"v2 {op}"] / med[f"v1 {op}"], 3),
            }
            for op in ("seal", "open")
        },
        "live_200_byte_messages": {
            "seal_flush_us": round(med["live seal us"], 1),
            "open_us": round(med["live open us"], 1),
            "bare_primitives_seal_plus_open_us": round(bare, 1),
            "xfer_vs_bare": round(live / bare, 2),
            "cpu_share_at_10ms_flushes": round(live / (FLUSH_INTERVAL_S * 1e6), 5),
        },
        "samples": {k: [round(x, 2) for x in v] for k, v in samples.items()},
    }
    print()
    print(
        f"full chunks, {args.mib} MiB, {args.rounds} rounds, medians, "
        "one thread, by its CPU time"
    )
    print(f"{'op':5} {'v1 MB/s':>8} {'v2 MB/s':>8} {'v2/v1':>6}")
    for op, row in report["full_chunks_mb_s"].items():
        print(f"{op:5} {row['v1']:>8} {row['v2']:>8} {row['v2_vs_v1']:>6.3f}")
    lv = report["live_200_byte_messages"]
    print()
    print(
        f"live, {MESSAGE}-byte messages each flushed: seal+flush "
        f"{lv['seal_flush_us']} us, open {lv['open_us']} us; bare primitives "
        f"{lv['bare_primitives_seal_plus_open_us']} us ({lv['xfer_vs_bare']}x); "
        f"CPU at one flush per 10 ms: {lv['cpu_share_at_10ms_flushes'] * 100:.3f} %"
    )
    write_report(args.json, "envelope_v2", report, lead="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
