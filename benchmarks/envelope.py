"""Envelope throughput and memory, beside OpenSSL measured in the same run.

    python benchmarks/envelope.py [--mib 256] [--rounds 5] [--json PATH]

For each suite it measures, in interleaved rounds so every figure sees the
same noise of this shared machine:

* OpenSSL's own speed for the primitives (``openssl speed -evp aes-256-ctr``
  and ``-hmac sha512|sha256`` at 64 KiB blocks), combined as 1/(1/a + 1/b):
  the single-core limit of encrypt-then-MAC;
* xfer's seal and open of an in-memory buffer, fed in 1 MiB pieces through
  ``update_into`` (as the file adapter does), on one thread and on two;
* the machine's own two-thread scaling of bare HMAC at that moment
  (``openssl speed -multi 2``), to tell our overhead from a busy second core.

Then it runs ``xfer encrypt`` and ``xfer decrypt`` on files of 100 MiB and
1 GiB as separate processes and reports each one's peak RSS.

Figures are medians; MB = 10**6 bytes, as ``openssl speed`` counts. It prints
a table and writes JSON (default ``benchmarks/results/envelope.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cryptography
from _common import add_json_option, write_report

from xfer.aio.files import READ_SIZE
from xfer.envelope import DEFAULT_CHUNK_SIZE, Opener, Sealer, Suite

PIECE = READ_SIZE  # what the file adapter feeds per update


def openssl_speed(args: list[str], seconds: int) -> float:
    """MB/s that ``openssl speed`` reports for 64 KiB blocks."""
    out = subprocess.run(
        [
            "openssl",
            "speed",
            "-elapsed",
            "-seconds",
            str(seconds),
            "-bytes",
            "65536",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    last = [line for line in out.splitlines() if line.strip()][-1]
    match = re.search(r"([\d.]+)k\s*$", last)
    if not match:
        raise RuntimeError(f"cannot parse openssl output: {last!r}")
    return float(match.group(1)) / 1000  # 1000s of bytes per second -> MB/s


def combined(a: float, b: float) -> float:
    return 1 / (1 / a + 1 / b)


def seal_speed(
    data: memoryview, suite: Suite, pool: ThreadPoolExecutor | None
) -> float:
    sealer = Sealer(bytes(32), suite=suite, executor=pool, workers=2)
    buf = bytearray(sealer.output_bound(PIECE))
    start = time.perf_counter()
    for i in range(0, len(data), PIECE):
        sealer.update_into(data[i : i + PIECE], buf)
    sealer.finalize()
    return len(data) / (time.perf_counter() - start) / 1e6


def open_speed(sealed: memoryview, size: int, pool: ThreadPoolExecutor | None) -> float:
    opener = Opener(bytes(32), executor=pool, workers=2)
    buf = bytearray(2 * PIECE)  # above output_bound: a piece plus one pending chunk
    start = time.perf_counter()
    for i in range(0, len(sealed), PIECE):
        opener.update_into(sealed[i : i + PIECE], buf)
    opener.finalize()
    return size / (time.perf_counter() - start) / 1e6


# A tiny launcher measures the child's peak RSS: a child forked from this
# process would count the benchmark's own buffers (shared at fork time) in its
# maximum, so the fork happens in a fresh interpreter of a few MiB instead.
_LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, time.perf_counter() - t)
"""


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (its peak RSS in MiB, wall seconds)."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *cmd],
        capture_output=True,
        text=True,
        check=True,
    )
    code, maxrss_kib, wall = out.stdout.split()
    if code != "0":
        raise RuntimeError(f"{cmd} failed: {out.stderr}")
    return int(maxrss_kib) / 1024, float(wall)


def reference_speed(data: memoryview, suite: Suite, threads: int) -> float:
    """Bare encrypt-then-MAC with cryptography, no xfer: the halves of the
    buffer on ``threads`` threads. The ceiling for what xfer can reach."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    algorithm = (
        hashes.SHA512 if suite is Suite.AES256_CTR_HMAC_SHA512 else hashes.SHA256
    )
    step = DEFAULT_CHUNK_SIZE

    def work(view: memoryview) -> None:
        enc = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
        out = bytearray(step)
        for i in range(0, len(view), step):
            enc.update_into(view[i : i + step], out)
            mac = hmac.HMAC(bytes(64), algorithm())
            mac.update(out)
            mac.finalize()

    part = len(data) // threads
    views = [data[i * part : (i + 1) * part] for i in range(threads)]
    start = time.perf_counter()
    if threads == 1:
        work(views[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, views))
    return len(data) / (time.perf_counter() - start) / 1e6


def rss_table(sizes_mib: list[int], folder: Path) -> list[dict[str, Any]]:
    xfer = [sys.executable, "-m", "xfer_cli"]
    key = folder / "k.key"
    subprocess.run([*xfer, "keygen", str(key)], check=True, capture_output=True)
    rows = []
    for mib in sizes_mib:
        plain, sealed, out = folder / "plain", folder / "sealed", folder / "out"
        with plain.open("wb") as f:
            block = os.urandom(PIECE)
            for _ in range(mib):
                f.write(block)
        enc_rss, enc_s = peak_rss(
            [*xfer, "encrypt", "-q", "-k", str(key), str(plain), str(sealed)]
        )
        dec_rss, dec_s = peak_rss(
            [*xfer, "decrypt", "-q", "-k", str(key), str(sealed), str(out)]
        )
        same = plain.stat().st_size == out.stat().st_size
        rows.append(
            {
                "size_mib": mib,
                "encrypt_peak_rss_mib": round(enc_rss, 1),
                "decrypt_peak_rss_mib": round(dec_rss, 1),
                "encrypt_mb_s": round(mib * PIECE / enc_s / 1e6),
                "decrypt_mb_s": round(mib * PIECE / dec_s / 1e6),
                "sizes_match": same,
            }
        )
        for p in (plain, sealed, out):
            p.unlink()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="in-memory buffer size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2, help="per openssl figure")
    parser.add_argument("--rss-mib", type=int, nargs="*", default=[100, 1024])
    add_json_option(parser, "envelope")
    args = parser.parse_args()
    if not shutil.which("openssl"):
        print("openssl is needed for the reference figures (apt-get install openssl)")
        return 1

    data = memoryview(os.urandom(args.mib * PIECE))
    hmacs = {
        Suite.AES256_CTR_HMAC_SHA512: "sha512",
        Suite.AES256_CTR_HMAC_SHA256: "sha256",
    }
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    sealed_by_suite = {}
    for suite in hmacs:
        s = Sealer(bytes(32), suite=suite)
        sealed_by_suite[suite] = memoryview(s.update(data) + s.finalize())
    with ThreadPoolExecutor(1) as pool:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            add(
                "openssl aes-256-ctr",
                openssl_speed(["-evp", "aes-256-ctr"], args.seconds),
            )
            for suite, h in hmacs.items():
                add(f"openssl hmac-{h}", openssl_speed(["-hmac", h], args.seconds))
                add(
                    f"openssl hmac-{h} x2",
                    openssl_speed(["-multi", "2", "-hmac", h], args.seconds),
                )
                sealed = sealed_by_suite[suite]
                add(f"{suite.label} python 1t", reference_speed(data, suite, 1))
                add(f"{suite.label} python 2t", reference_speed(data, suite, 2))
                add(f"{suite.label} seal 1t", seal_speed(data, suite, None))
                add(f"{suite.label} open 1t", open_speed(sealed, len(data), None))
                add(f"{suite.label} seal 2t", seal_speed(data, suite, pool))
                add(f"{suite.label} open 2t", open_speed(sealed, len(data), pool))
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {k: (min(v), max(v)) for k, v in samples.items()}
    best = {k: max(v) for k, v in samples.items()}

    rows = []
    for suite, h in hmacs.items():
        limit = combined(med["openssl aes-256-ctr"], med[f"openssl hmac-{h}"])
        hw_scaling = med[f"openssl hmac-{h} x2"] / med[f"openssl hmac-{h}"]
        py_one = med[f"{suite.label} python 1t"]
        py_scaling = med[f"{suite.label} python 2t"] / py_one
        for op in ("seal", "open"):
            one, two = med[f"{suite.label} {op} 1t"], med[f"{suite.label} {op} 2t"]
            rows.append(
                {
                    "suite": suite.label,
                    "op": op,
                    "openssl_combined_mb_s": round(limit),
                    "single_mb_s": round(one),
                    "single_vs_openssl": round(one / limit, 3),
                    "parallel_2t_mb_s": round(two),
                    "parallel_speedup": round(two / one, 2),
                    "openssl_2proc_hmac_speedup": round(hw_scaling, 2),
                    # Best of the rounds for each figure: on a shared machine the
                    # fastest round is the one least disturbed by others.
                    "best_single_vs_openssl": round(
                        best[f"{suite.label} {op} 1t"]
                        / combined(
                            best["openssl aes-256-ctr"], best[f"openssl hmac-{h}"]
                        ),
                        3,
                    ),
                    "best_parallel_speedup": round(
                        best[f"{suite.label} {op} 2t"] / best[f"{suite.label} {op} 1t"],
                        2,
                    ),
                    "best_bare_python_2t_speedup": round(
                        best[f"{suite.label} python 2t"]
                        / best[f"{suite.label} python 1t"],
                        2,
                    ),
                    "bare_python_mb_s": round(py_one),
                    "single_vs_bare_python": round(one / py_one, 3),
                    "bare_python_2t_speedup": round(py_scaling, 2),
                    "single_range": [
                        round(x) for x in spread[f"{suite.label} {op} 1t"]
                    ],
                    "parallel_range": [
                        round(x) for x in spread[f"{suite.label} {op} 2t"]
                    ],
                }
            )

    print()
    print(
        f"in memory: {args.mib} MiB, {args.rounds} rounds, chunk {DEFAULT_CHUNK_SIZE} B, medians in MB/s"
    )
    head = (
        f"{'suite':24} {'op':5} {'openssl':>8} {'1 thread':>9} {'ratio':>6} "
        f"{'2 threads':>10} {'speedup':>8} {'hw x2':>6} {'bare py':>8} {'bare x2':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        print(
            f"{row['suite']:24} {row['op']:5} {row['openssl_combined_mb_s']:>8} "
            f"{row['single_mb_s']:>9} {row['single_vs_openssl']:>6.2f} "
            f"{row['parallel_2t_mb_s']:>10} {row['parallel_speedup']:>7.2f}x "
            f"{row['openssl_2proc_hmac_speedup']:>5.2f}x {row['bare_python_mb_s']:>8} "
            f"{row['bare_python_2t_speedup']:>7.2f}x"
        )
    print("best of the rounds (each figure's fastest round):")
    for row in rows:
        print(
            f"  {row['suite']:24} {row['op']:5} ratio {row['best_single_vs_openssl']:.2f}"
            f"  2-thread speed-up {row['best_parallel_speedup']:.2f}x"
            f"  (bare python {row['best_bare_python_2t_speedup']:.2f}x)"
        )
    print(
        "openssl = system OpenSSL's AES-256-CTR and HMAC combined as 1/(1/a+1/b); "
        "ratio = 1 thread / openssl;\nhw x2 = openssl -multi 2 HMAC speed-up; "
        "bare py = cryptography's CTR+HMAC without xfer, 1 thread, and its "
        "2-thread speed-up (same rounds)"
    )

    rss = []
    if args.rss_mib:
        with tempfile.TemporaryDirectory(dir=os.environ.get("XFER_BENCH_DIR")) as tmp:
            rss = rss_table(args.rss_mib, Path(tmp))
        print()
        print(
            f"{'file':>8} {'encrypt peak RSS':>17} {'decrypt peak RSS':>17} {'enc MB/s':>9} {'dec MB/s':>9}"
        )
        for row in rss:
            print(
                f"{row['size_mib']:>4} MiB {row['encrypt_peak_rss_mib']:>13} MiB "
                f"{row['decrypt_peak_rss_mib']:>13} MiB {row['encrypt_mb_s']:>9} {row['decrypt_mb_s']:>9}"
            )

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "openssl_cli": subprocess.run(
                ["openssl", "version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "params": {
            "mib": args.mib,
            "rounds": args.rounds,
            "piece_bytes": PIECE,
            "chunk_size": DEFAULT_CHUNK_SIZE,
        },
        "throughput": rows,
        "samples_mb_s": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "peak_rss": rss,
    }
    write_report(args.json, "envelope", report, lead="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
