"""One file to 1, 2, 4 and 8 recipients at once, over direct SOCKS5 on a local Prosody.

    python benchmarks/recipients.py [--size MiB] [--counts 1,2,4,8] [--rounds 1] [--json PATH]

Starts a throw-away Prosody on loopback; each recipient is its own process
(this script with ``--receiver``) that accepts every offer and deletes the
file once it is verified and stored. The sender is this process: it sends
one file (default 64 MiB; the issue's figure is ``--size 256``) with
``send_file_to_many`` to the first N recipients, OTR already secure (a small
file went to all first), and measures from the call to its return (every
receiver has verified, fsynced and renamed the file):

* total throughput: N x size / wall time (MB = 10**6 bytes);
* the sender's reads of the file: bytes the shared reader read (a file read
  once reads its size), and ``read_bytes`` of ``/proc/self/io`` (storage
  reads; the file is dropped from the page cache before each case with
  ``posix_fadvise(DONTNEED)``, so this counts what came from the disk);
* the sender's CPU (all its threads, ``time.process_time``), in all and per
  recipient; and the receivers' CPU, per recipient;
* the same sends with every recipient hashing the file for itself (the
  way before the shared read hashed it once), interleaved with the others
  in the same run: ``hash_once_cpu_ratio`` is the sender's CPU per
  recipient hashing once over that of hashing per recipient.

The reference, measured in the same run, is one recipient: the ratios say
how the total throughput and the sender's CPU per recipient change with N,
and how many times the file was read (N independent sends would read it N
times). The machine's cores bound everything: with two cores, N receivers
and the sender share them. It prints a table and writes JSON (default
``benchmarks/results/recipients.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import add_json_option, write_report

if TYPE_CHECKING:
    from xfer.api import Client

MiB = 1 << 20
USERS = [f"r{i}" for i in range(1, 9)]
SENDER = "sender"
ACCOUNTS = {u: f"{u}-pw" for u in [SENDER, *USERS]}
DOMAIN = "xfer.test"


def _cpu() -> float:
    return time.process_time()


def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


# -- a recipient (its own process) -------------------------------------------------


async def receiver_main(args: argparse.Namespace) -> None:
    import xfer
    from xfer.testing.transports import forcing

    client = await xfer.connect(
        f"{args.receiver}@{DOMAIN}/bench",
        ACCOUNTS[args.receiver],
        identity=args.identity,
        host="127.0.0.1",
        port=args.port,
        tls="none",
        **forcing("socks5-direct"),
    )
    client.trust(f"{SENDER}@{DOMAIN}", args.trust)
    inbox = Path(args.inbox)
    print(json.dumps({"event": "ready", "fingerprint": client.fingerprint}), flush=True)
    while True:
        offer = await client.next_offer()
        cpu0 = _cpu()
        try:
            path = await offer.accept(inbox, overwrite=True)
            size = path.stat().st_size
            await asyncio.to_thread(path.unlink)
            event: dict[str, Any] = {"event": "received", "bytes": size}
        except Exception:
            event = {"event": "received", "error": traceback.format_exc()}
        event["cpu"] = _cpu() - cpu0
        print(json.dumps(event), flush=True)


# -- the sender and the driver ---------------------------------------------------


class Recipient:
    def __init__(self, user: str, port: int, folder: Path, trust: str) -> None:
        self.user = user
        self.jid = f"{user}@{DOMAIN}"
        inbox = folder / f"{user}-inbox"
        inbox.mkdir()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--receiver",
                user,
                "--port",
                str(port),
                "--identity",
                str(folder / f"{user}-id"),
                "--inbox",
                str(inbox),
                "--trust",
                trust,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.fingerprint = str(self.next_event()["fingerprint"])

    def next_event(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"receiver {self.user} ended")
        got: dict[str, Any] = json.loads(line)
        if "error" in got:
            raise RuntimeError(got["error"])
        return got

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def send_round(
    client: Client,
    recipients: list[Recipient],
    path: Path,
    size: int,
    *,
    hash_once: bool = True,
) -> dict[str, Any]:
    from xfer.xmpp.transfer.many import send_to_many

    transfer = client._transfer  # the plugin: for its sender
    drop_cache(path)
    cpu0, io0 = _cpu(), _read_bytes()
    start = time.perf_counter()
    result = await send_to_many(
        transfer._sender,
        str(client.jid),
        [r.jid for r in recipients],
        path,
        hash_once=hash_once,
    )
    wall = time.perf_counter() - start
    cpu, io = _cpu() - cpu0, _read_bytes() - io0
    if result.failed:
        raise RuntimeError(f"not delivered: {result.failed}")
    received = await asyncio.gather(
        *(asyncio.to_thread(r.next_event) for r in recipients)
    )
    n = len(recipients)
    return {
        "recipients": n,
        "seconds": wall,
        "total_mb_s": n * size / wall / 1e6,
        "sender_cpu": cpu,
        "sender_cpu_per_recipient": cpu / n,
        "receiver_cpu_per_recipient": statistics.mean(e["cpu"] for e in received),
        "reader_bytes": result.bytes_read,
        "hashed_at_read_bytes": result.bytes_hashed,
        "reads_of_file": result.bytes_read / size,
        "disk_read_bytes": io,
        "transports": sorted({s.transport for s in result.sent.values()}),
    }


async def bench(
    args: argparse.Namespace, folder: Path, port: int
) -> list[dict[str, Any]]:
    import xfer
    from xfer.otr.fingerprint import format_fingerprint
    from xfer.store import IdentityStore
    from xfer.testing.transports import forcing

    sender_id = IdentityStore(folder / "sender-id")
    fingerprint = format_fingerprint(sender_id.private_key().public.fingerprint)
    counts = [int(c) for c in args.counts.split(",")]
    recipients = [Recipient(u, port, folder, fingerprint) for u in USERS[: max(counts)]]
    client = await xfer.connect(
        f"{SENDER}@{DOMAIN}/bench",
        ACCOUNTS[SENDER],
        identity=sender_id,
        host="127.0.0.1",
        port=port,
        tls="none",
        **forcing("socks5-direct"),
    )
    try:
        for r in recipients:
            client.trust(r.jid, r.fingerprint)
        small = folder / "warm-up"
        small.write_bytes(os.urandom(1000))
        await send_round(client, recipients, small, 1000)  # OTR up with everyone
        path = folder / "file.bin"
        with path.open("wb") as f:
            block = os.urandom(MiB)
            for i in range(args.size):
                f.write(block[i % 7 :] + block[: i % 7])
        size = args.size * MiB
        rows: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            for n in counts:
                row = await send_round(client, recipients[:n], path, size)
                old = await send_round(
                    client, recipients[:n], path, size, hash_once=False
                )
                row["per_recipient_hash_sender_cpu_per_recipient"] = old[
                    "sender_cpu_per_recipient"
                ]
                row["per_recipient_hash_total_mb_s"] = old["total_mb_s"]
                rows.append(row)
                print(
                    f"  {n} recipient(s): {row['total_mb_s']:.1f} MB/s total, "
                    f"read {row['reads_of_file']:.2f}x, "
                    f"sender CPU {row['sender_cpu_per_recipient']:.2f} s/recipient "
                    f"(hashing per recipient: {old['sender_cpu_per_recipient']:.2f})",
                    flush=True,
                )
        return rows
    finally:
        await client.close()
        for r in recipients:
            r.stop()


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_n: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_n.setdefault(row["recipients"], []).append(row)
    out = []
    for n, group in sorted(by_n.items()):
        med = {
            k: statistics.median(r[k] for r in group)
            for k in group[0]
            if isinstance(group[0][k], (int, float)) and k != "recipients"
        }
        out.append({"recipients": n, **med, "transports": group[0]["transports"]})
    base = out[0]
    for row in out:
        row["throughput_vs_1"] = row["total_mb_s"] / base["total_mb_s"]
        row["sender_cpu_per_recipient_vs_1"] = (
            row["sender_cpu_per_recipient"] / base["sender_cpu_per_recipient"]
        )
        row["hash_once_cpu_ratio"] = (
            row["sender_cpu_per_recipient"]
            / row["per_recipient_hash_sender_cpu_per_recipient"]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="MiB (default 64)")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=1)
    add_json_option(parser, "recipients")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--identity", help=argparse.SUPPRESS)
    parser.add_argument("--inbox", help=argparse.SUPPRESS)
    parser.add_argument("--trust", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(receiver_main(args))
        return 0

    from xfer.testing.prosody import LocalProsody

    # Not tmpfs: the reads and the receivers' fsyncs should reach a disk.
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        folder = Path(tmp)
        with LocalProsody(domain=DOMAIN, accounts=dict(ACCOUNTS)) as server:
            print(
                f"one {args.size} MiB file to {args.counts} recipients, direct SOCKS5"
            )
            rows = asyncio.run(bench(args, folder, server.c2s_port))
    table = summarise(rows)
    print(
        f"{'N':>2} {'MB/s total':>10} {'vs 1':>5} {'reads':>5} {'disk MiB':>8} "
        f"{'snd CPU/rcpt s':>14} {'vs 1':>5} {'hash/rcpt s':>11} {'ratio':>5} "
        f"{'rcv CPU/rcpt s':>14}"
    )
    for r in table:
        print(
            f"{r['recipients']:>2} {r['total_mb_s']:>10.1f} {r['throughput_vs_1']:>5.2f} "
            f"{r['reads_of_file']:>5.2f} {r['disk_read_bytes'] / MiB:>8.1f} "
            f"{r['sender_cpu_per_recipient']:>14.2f} "
            f"{r['sender_cpu_per_recipient_vs_1']:>5.2f} "
            f"{r['per_recipient_hash_sender_cpu_per_recipient']:>11.2f} "
            f"{r['hash_once_cpu_ratio']:>5.2f} "
            f"{r['receiver_cpu_per_recipient']:>14.2f}"
        )
    write_report(
        args.json,
        "recipients",
        {
            "size_mib": args.size,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "results": table,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
