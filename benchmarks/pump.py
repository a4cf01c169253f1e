"""The data phase alone: send_sealed to receive_sealed over loopback TCP.

    python benchmarks/pump.py [--mib 256 1/1024] [--rounds 3] [--profile DIR]
                              [--perf DIR | --py-spy DIR] [--suite auto|1|2] [--chunk-kib 64]
                              [--module MODULE]
                              [--dir DIR] [--json PATH]

No XMPP, no OTR: two processes (this script with ``--side``), a sender and a
receiver, joined by one TCP connection on loopback (an
:class:`xfer.aio.tcp.TcpConnection` under a SOCKS5 stream on each side, as
after a direct SOCKS5 negotiation), with the crypto threads of a real
transfer. Each side reports its wall time, CPU (user and system) and peak
RSS (``getrusage``, the process's whole life: imports included); the
receiver's time runs from its first read to the file in place (fsync and
rename included). ``--profile DIR`` writes a cProfile of each side
(``DIR/sender-<size>.prof``, ``DIR/receiver-<size>.prof``); ``--perf DIR``
runs each side under ``perf record`` (CPU clock samples, for where the time
goes below Python: the interpreter, libcrypto, the kernel), into
``DIR/<side>-<size>.data``; ``--py-spy DIR`` under ``py-spy record`` (Python
and native frames per thread, collapsed stacks in ``DIR/<side>-<size>.txt``).

Rounds interleave the sizes; the table shows medians (RSS: the largest).
MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from _common import add_json_option, write_report

MiB = 1 << 20
CHUNK = 64 * 1024


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


async def _side(args: argparse.Namespace) -> dict[str, Any]:
    pump = importlib.import_module(args.module)
    receive_sealed, send_sealed = pump.receive_sealed, pump.send_sealed
    from xfer.aio.socks5 import Socks5Stream
    from xfer.aio.tcp import TcpConnection, open_tcp
    from xfer.envelope import Sealer
    from xfer.envelope.choice import fastest_suite
    from xfer.transfer.offer import TransferOffer
    from xfer.xmpp.transfer.context import crypto_executor

    spec = json.loads(args.spec)
    key = bytes.fromhex(spec["key"])
    suite = fastest_suite() if spec["suite"] == "auto" else int(spec["suite"])
    offer = TransferOffer(
        transfer_id=bytes.fromhex(spec["tid"]),
        salt=bytes.fromhex(spec["salt"]),
        suite=suite,
        chunk_size=spec["chunk"],
        size=spec["size"],
        name="f.bin",
        sha256=bytes.fromhex(spec["sha256"]),
    )
    sealer = Sealer.announced(
        key,
        salt=offer.salt,
        transfer_id=offer.transfer_id,
        suite=offer.suite,
        chunk_size=offer.chunk_size,
        executor=crypto_executor(),
    )
    sealed_size = sealer.header.sealed_size(offer.size)
    loop = asyncio.get_running_loop()
    profile = cProfile.Profile() if args.profile else None
    if args.side == "receiver":
        got: asyncio.Future[TcpConnection] = loop.create_future()
        server = await loop.create_server(
            lambda: TcpConnection(on_made=got.set_result), "127.0.0.1", 0
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        connection = await got
        stream = Socks5Stream(peer="s", sid="x", connection=connection, streamhost="")
        await connection.read(1)  # the sender's first byte: the clock starts
        begin, cpu0 = time.perf_counter(), _usage()
        if profile:
            profile.enable()
        await receive_sealed(
            stream,
            key,
            offer,
            spec["dest"],
            sealed_size=sealed_size,
            executor=crypto_executor(),
            overwrite=True,
        )
    else:
        connection = await open_tcp("127.0.0.1", spec["port"])
        stream = Socks5Stream(peer="r", sid="x", connection=connection, streamhost="")
        await connection.write(b"!")
        begin, cpu0 = time.perf_counter(), _usage()
        if profile:
            profile.enable()
        await send_sealed(
            spec["source"],
            stream,
            sealer,
            total=offer.size,
            digest=hashlib.sha256(),
        )
    if profile:
        profile.disable()
        profile.dump_stats(f"{args.profile}/{args.side}-{spec['size']}.prof")
    end, cpu1 = time.perf_counter(), _usage()
    return {
        "seconds": end - begin,
        "user": cpu1["user"] - cpu0["user"],
        "sys": cpu1["sys"] - cpu0["sys"],
        "rss_mib": cpu1["rss_mib"],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(4 * MiB):
            digest.update(piece)
    return digest.hexdigest()


def _write_random(path: Path, size: int) -> None:
    """Without holding the file in memory: a child's peak RSS (ru_maxrss)
    starts from its parent's at the fork."""
    with path.open("wb") as f:
        for done in range(0, size, 4 * MiB):
            f.write(os.urandom(min(4 * MiB, size - done)))


def _report(output: str) -> dict[str, Any]:
    """A side's report: its line of JSON among a profiler's own lines."""
    return next(
        json.loads(line) for line in output.splitlines() if line.startswith("{")
    )


def _round(folder: Path, source: Path, size: int, args: argparse.Namespace) -> dict:
    profile = args.profile
    spec = {
        "suite": args.suite,
        "chunk": args.chunk_kib * 1024,
        "key": os.urandom(32).hex(),
        "tid": os.urandom(16).hex(),
        "salt": os.urandom(32).hex(),
        "size": size,
        "sha256": _sha256(source),
        "source": str(source),
        "dest": str(folder / "received.bin"),
    }
    base = [sys.executable, __file__, "--module", args.module]
    base += ["--profile", profile] if profile else []
    wrap: dict[str, list[str]] = {"sender": [], "receiver": []}
    for side in wrap:
        if args.perf:
            wrap[side] = ["perf", "record", "-q", "-F", "997", "-e", "cpu-clock"]
            wrap[side] += ["-o", f"{args.perf}/{side}-{size}.data", "--"]
        elif args.py_spy:
            wrap[side] = ["py-spy", "record", "--threads", "--native", "-r", "500"]
            wrap[side] += ["-f", "raw", "-o", f"{args.py_spy}/{side}-{size}.txt"]
            wrap[side] += ["--"]
    receiver = subprocess.Popen(
        [*wrap["receiver"], *base, "--side", "receiver", "--spec", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    line = receiver.stdout.readline()
    while not line.strip().isdigit():  # a profiler's own lines
        line = receiver.stdout.readline()
    spec["port"] = int(line)
    sender = subprocess.run(
        [*wrap["sender"], *base, "--side", "sender", "--spec", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    got = _report(receiver.stdout.read())
    if receiver.wait() != 0:
        raise RuntimeError("the receiver failed")
    os.unlink(spec["dest"])
    return {"sender": _report(sender.stdout), "receiver": got}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", nargs="*", type=Fraction, default=[Fraction(256)])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write cProfile files here")
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    parser.add_argument(
        "--perf", help="run each side under 'perf record' (cpu-clock), files here"
    )
    parser.add_argument(
        "--py-spy", help="run each side under 'py-spy record' (raw), files here"
    )
    parser.add_argument(
        "--suite", default="auto", help="1, 2 or auto (the CLI's default)"
    )
    parser.add_argument(
        "--chunk-kib", type=int, default=CHUNK // 1024, help="the envelope's chunks"
    )
    parser.add_argument(
        "--module",
        default="xfer.aio.pump",
        help="where send_sealed and receive_sealed come from (to compare a change)",
    )
    parser.add_argument("--side", choices=["sender", "receiver"])
    parser.add_argument("--spec")
    add_json_option(parser, "pump")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(asyncio.run(_side(args))), flush=True)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="xfer-pump-", dir=args.dir))
    sizes = [int(m * MiB) for m in args.mib]
    results: dict[int, list[dict]] = {size: [] for size in sizes}
    try:
        sources = {}
        for size in sizes:
            sources[size] = folder / f"{size}.bin"
            _write_random(sources[size], size)
        for r in range(args.rounds):
            for size in sizes:
                print(f"round {r + 1}/{args.rounds}: {size} bytes", file=sys.stderr)
                results[size].append(_round(folder, sources[size], size, args))
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    rows = {}
    print(f"{'bytes':>10} {'MB/s':>7}  {'CPU s/GiB s (u+s) r (u+s)':>30}  RSS MiB s/r")
    for size, runs in results.items():
        med = {
            side: {
                k: statistics.median(run[side][k] for run in runs)
                for k in ("seconds", "user", "sys")
            }
            for side in ("sender", "receiver")
        }
        rss = {side: max(run[side]["rss_mib"] for run in runs) for side in med}
        per_gib = (1 << 30) / size
        row = {
            "mb_s": size / med["receiver"]["seconds"] / 1e6,
            "cpu_s_per_gib": {
                side: {k: med[side][k] * per_gib for k in ("user", "sys")}
                for side in med
            },
            "rss_mib": rss,
            "runs": runs,
        }
        rows[str(size)] = row
        c = row["cpu_s_per_gib"]
        print(
            f"{size:>10} {row['mb_s']:>7.0f}  "
            f"s {c['sender']['user']:.2f}+{c['sender']['sys']:.2f} "
            f"r {c['receiver']['user']:.2f}+{c['receiver']['sys']:.2f}  "
            f"{rss['sender']:.0f}/{rss['receiver']:.0f}"
        )
    write_report(args.json, "pump", {"sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
