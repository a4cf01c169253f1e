"""A stream's receiver alone, over a real loopback SOCKS5 connection: its CPU
per GiB when the network delivers the stream in small pieces, against the
same stream delivered as fast as it goes, in the same run.

    python benchmarks/stream_receive.py [--size-mib 256] [--rate 80]
                                        [--rounds 3] [--sink file] [--json PATH]

A sender process writes a sealed stream (envelope format version 2, 64 KiB
chunks, sealed beforehand) to a loopback TCP connection in 64 KiB writes:
paced at ``--rate`` MB/s (a receiver that keeps up is woken for each piece
the network delivers, as when sender and receiver share a machine's CPU), or
unpaced (the receiver falls behind and reads up to 1 MiB at a time). This
process runs ``receive_stream`` (as ``xfer receive --stdout`` does) into
``output_sink`` writing a file (``--sink file``: as ``> FILE``) or a pipe
that ``cat`` drains into ``/dev/null`` (``--sink pipe``). CPU = this
process's user and system time from the first read to the verified end, per
GiB; the reads it made are counted. Ratio = paced / unpaced CPU per GiB,
median over the rounds (alternating): 1.0 means small pieces cost the
receiver nothing more than large ones.

Prints a table and writes JSON (default ``benchmarks/results/stream_receive.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_json_option, write_report

from xfer.aio.socks5 import Socks5Stream
from xfer.aio.stdio import output_sink
from xfer.aio.stream import StreamProgress, receive_stream, stream_sealer
from xfer.aio.tcp import TcpConnection
from xfer.transfer.offer import TransferDigest, TransferOffer

MiB = 1 << 20
GiB = 1 << 30
KEY = bytes(range(32))
PIECE = 64 * 1024
OFFER = TransferOffer.stream(
    transfer_id=b"\x01" * 16, salt=b"\x07" * 32, suite=1, chunk_size=PIECE, name="s"
)

SENDER = """
import socket, sys, time
path, port, rate, piece = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
start, sent = time.perf_counter(), 0
with open(path, "rb") as f:
    while data := f.read(piece):
        s.sendall(data)
        sent += len(data)
        ahead = sent / rate - (time.perf_counter() - start) if rate else 0
        if ahead > 0.0005:
            time.sleep(ahead)
s.close()
"""


def seal(path: Path, size: int) -> bytes:
    """Write the sealed stream of ``size`` random bytes; their SHA-256."""
    sealer = stream_sealer(KEY, OFFER)
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for _ in range(size // MiB):
            digest.update(block)
            f.write(sealer.update(block))
        f.write(sealer.finalize())
    return digest.digest()


class Counted(Socks5Stream):
    """A SOCKS5 stream whose reads are counted."""

    reads = 0

    async def readinto(self, buf: memoryview) -> int:
        self.reads += 1
        return await super().readinto(buf)


async def receive(
    sealed: Path, size: int, sha256: bytes, rate: float, sink_kind: str, out: Path
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[TcpConnection] = loop.create_future()
    server = await loop.create_server(
        lambda: TcpConnection(on_made=accepted.set_result), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    argv = [
        sys.executable,
        "-c",
        SENDER,
        str(sealed),
        str(port),
        str(rate * 1e6),
        str(PIECE),
    ]
    sender = subprocess.Popen(argv)  # noqa: ASYNC220 - it runs beside the loop
    drain = None
    try:
        connection = await accepted
        stream = Counted(peer="p", sid="s", connection=connection, streamhost="h")

        async def digest() -> TransferDigest:
            return TransferDigest(
                transfer_id=OFFER.transfer_id, sha256=sha256, size=size
            )

        if sink_kind == "pipe":
            drain = subprocess.Popen(  # noqa: ASYNC220 - it runs beside the loop
                ["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
            )
            assert drain.stdin is not None
            fd = drain.stdin.fileno()
        else:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        before, began = os.times(), time.perf_counter()
        async with output_sink(fd) as sink:
            await receive_stream(
                stream,
                KEY,
                OFFER,
                sink,
                state=StreamProgress(),
                digest=digest,
            )
        after, ended = os.times(), time.perf_counter()
        if drain is not None:
            assert drain.stdin is not None
            drain.stdin.close()
        else:
            os.close(fd)
        cpu = (after.user - before.user) + (after.system - before.system)
        return {
            "cpu_s_per_gib": round(cpu * GiB / size, 3),
            "mb_s": round(size / (ended - began) / 1e6, 1),
            "reads": stream.reads,
            "mean_read_kib": round(size / stream.reads / 1024, 1),
        }
    finally:
        server.close()
        await asyncio.to_thread(sender.wait)
        if drain is not None:
            await asyncio.to_thread(drain.wait)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rate", type=float, default=80, help="paced MB/s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("file", "pipe"), default="file")
    add_json_option(parser, "stream_receive")
    args = parser.parse_args()
    size = args.size_mib * MiB
    load_start = os.getloadavg()[0]
    rows: dict[str, list[dict[str, float]]] = {"paced": [], "unpaced": []}
    with tempfile.TemporaryDirectory(prefix="xfer-bench-") as tmp:
        sealed, out = Path(tmp) / "sealed.bin", Path(tmp) / "out.bin"
        sha256 = seal(sealed, size)
        for r in range(args.rounds):
            order = ("paced", "unpaced") if r % 2 == 0 else ("unpaced", "paced")
            for how in order:
                rate = args.rate if how == "paced" else 0.0
                row = asyncio.run(receive(sealed, size, sha256, rate, args.sink, out))
                print(f"{r + 1}/{args.rounds} {how}: {row}", file=sys.stderr)
                rows[how].append(row)
    ratios = [
        p["cpu_s_per_gib"] / u["cpu_s_per_gib"]
        for p, u in zip(rows["paced"], rows["unpaced"], strict=True)
    ]
    medians = {
        how: round(statistics.median(x["cpu_s_per_gib"] for x in r), 3)
        for how, r in rows.items()
    }
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(load_start, 2),
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
        },
        "params": {
            "size_mib": args.size_mib,
            "paced_mb_s": args.rate,
            "write_bytes": PIECE,
            "rounds": args.rounds,
            "sink": args.sink,
        },
        "rounds": rows,
        "median_cpu_s_per_gib": medians,
        "ratio_paced_to_unpaced": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
    }
    print(
        f"CPU s/GiB paced {medians['paced']} (mean read "
        f"{statistics.median(x['mean_read_kib'] for x in rows['paced'])} KiB), "
        f"unpaced {medians['unpaced']}; ratio {report['ratio_paced_to_unpaced']}"
    )
    with contextlib.suppress(OSError):
        write_report(args.json, "stream_receive", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
