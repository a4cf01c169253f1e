"""One encrypted transfer over each path through ejabberd, beside the same through Prosody.

    python benchmarks/servers.py [--mib 64] [--rounds 1] [--stock-ibb-kib 32]
                                 [--dir DIR] [--json PATH]

Starts, in the same run, a throw-away Prosody (``xfer.testing.prosody``, no
rate limit) and two throw-away ejabberds (``xfer.testing.ejabberd``): one
with the c2s shaper off, for a like-for-like comparison, and one with the
shaper Debian ships (3000 B/s after a 20 kB burst per account). Every
transfer is done as ``benchmarks/transfer.py`` does it (its worker
processes: sender and receiver are two separate processes with fresh
identities that trust each other; OTR already secure through a small file;
timed from ``send_file``'s call to its return, by which time the receiver
has verified, fsynced and renamed the file), forcing each path as the
integration tests do: SOCKS5 direct, SOCKS5 through the server's proxy65,
IBB. The file is ``--mib`` MiB; through the stock shaper IBB gets only
``--stock-ibb-kib`` KiB (64 MiB would take hours). Per row: MB/s (10**6
bytes), time to the receiver's first byte, the server's CPU (100 % = one
core); per path the ratio ejabberd / Prosody of the MB/s. Rounds interleave
the servers; the table shows medians. Writes JSON (default
``benchmarks/results/servers.json``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_json_option, write_report
from transfer import ACCOUNTS, KINDS, Bench, MiB, machine_info, write_random

from xfer.testing.ejabberd import STOCK_C2S_SHAPER, LocalEjabberd
from xfer.testing.prosody import LocalProsody

SERVERS = ("prosody", "ejabberd", "ejabberd-stock-shaper")


def ejabberd_version() -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "ejabberd"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def row(bench: Bench, kind: str, path: Path) -> dict[str, Any]:
    figures = bench.encrypted(kind, path)
    return {
        "mb_s": figures["mb_s"],
        "total_ms": figures["total_ms"],
        "first_data_ms": figures["first_data_ms"],
        "server_cpu_pct": figures["prosody_cpu_pct"],  # the server's process
        "size": path.stat().st_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stock-ibb-kib", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "servers")
    args = parser.parse_args()

    started = time.perf_counter()
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {k: [] for k in KINDS} for s in SERVERS
    }
    folder = Path(tempfile.mkdtemp(prefix="xfer-servers-", dir=args.dir))
    servers: dict[str, Any] = {}
    try:
        servers["prosody"] = LocalProsody(accounts=dict(ACCOUNTS)).start()
        servers["ejabberd"] = LocalEjabberd(
            accounts=dict(ACCOUNTS), c2s_shaper=None
        ).start()
        servers["ejabberd-stock-shaper"] = LocalEjabberd(
            accounts=dict(ACCOUNTS), c2s_shaper=STOCK_C2S_SHAPER
        ).start()
        small = folder / "small.bin"
        write_random(small, 1024)
        big = folder / "big.bin"
        write_random(big, args.mib * MiB)
        tiny = folder / "tiny.bin"
        write_random(tiny, args.stock_ibb_kib * 1024)
        benches = {}
        for name, server in servers.items():
            (folder / name).mkdir()
            (folder / name / "small.bin").write_bytes(small.read_bytes())
            benches[name] = Bench(server, folder / name)
        for r in range(args.rounds):
            for kind in KINDS:
                for name in SERVERS:
                    path = tiny if (name, kind) == (SERVERS[2], "ibb") else big
                    print(
                        f"round {r + 1}/{args.rounds}: {kind} through {name}, "
                        f"{path.stat().st_size} bytes",
                        file=sys.stderr,
                    )
                    rows[name][kind].append(row(benches[name], kind, path))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started

    medians = {
        name: {
            kind: {
                key: round(statistics.median(x[key] for x in rows[name][kind]), 4)
                for key in rows[name][kind][0]
            }
            for kind in KINDS
        }
        for name in SERVERS
    }
    ratios = {
        kind: round(
            medians["ejabberd"][kind]["mb_s"] / medians["prosody"][kind]["mb_s"], 3
        )
        for kind in KINDS
    }
    print(
        f"\n{'path':<15}{'server':<24}{'bytes':>10}{'MB/s':>9}"
        f"{'1st byte ms':>13}{'server CPU %':>14}"
    )
    for kind in KINDS:
        for name in SERVERS:
            m = medians[name][kind]
            print(
                f"{kind:<15}{name:<24}{int(m['size']):>10}{m['mb_s']:>9.3g}"
                f"{m['first_data_ms']:>13.0f}{m['server_cpu_pct']:>14.0f}"
            )
        print(f"{'':<15}ejabberd / prosody MB/s: {ratios[kind]}")
    write_report(
        args.json,
        "servers",
        {
            "mib": args.mib,
            "stock_shaper_ibb_kib": args.stock_ibb_kib,
            "rounds": args.rounds,
            "elapsed_s": round(elapsed, 1),
            "ejabberd_over_prosody_mb_s": ratios,
            "medians": medians,
            "rows": rows,
            "machine": {**machine_info(), "ejabberd": ejabberd_version()},
        },
        lead="\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
