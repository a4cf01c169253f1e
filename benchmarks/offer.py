"""Time to offer: from the ``send_file`` call to the receiver holding the offer.

    python benchmarks/offer.py [--sizes-kib 1 262144] [--rounds 5] [--dir DIR]
                               [--json PATH]

Two ``xfer.connect`` clients that trust each other, in one process, through a
throw-away Prosody on loopback; OTR is made secure by a first small file. Then,
rounds interleaving the sizes, each file (random bytes, written once, so read
from a warm page cache) is sent over SOCKS5 direct and the receiver's
``next_offer`` is timed against the ``send_file`` call: what the sender does
before its offer (reading the file for what the offer carries, the OTR offer,
the Jingle session-initiate) plus the receiver's vetting. Also the whole
transfer (``send_file`` returns once the receiver stored the file and said so
inside OTR). Medians, in ms. It prints a table and writes JSON (default
``benchmarks/results/offer.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _common import add_json_option, write_report

import xfer
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing

ACCOUNTS = {"sender": "sender-pw", "receiver": "receiver-pw"}
MiB = 1 << 20


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 4 * MiB))
            f.write(piece)
            left -= len(piece)


async def measure(
    port: int, folder: Path, files: list[Path], rounds: int
) -> dict[str, list[dict[str, float]]]:
    config = forcing("socks5-direct")
    clients = []
    for user in ("sender", "receiver"):
        clients.append(
            await xfer.connect(
                f"{user}@xfer.test/bench",
                ACCOUNTS[user],
                identity=folder / f"id-{user}",
                host="127.0.0.1",
                port=port,
                tls="none",
                **config,
            )
        )
    sender, receiver = clients
    sender.trust(receiver.jid, receiver.fingerprint)
    receiver.trust(sender.jid, sender.fingerprint)
    inbox = folder / "inbox"
    inbox.mkdir()

    async def one(path: Path) -> dict[str, float]:
        start = time.perf_counter()
        sending = asyncio.ensure_future(sender.send_file(receiver.jid, path))
        offer = await receiver.next_offer(timeout=60)
        offered = time.perf_counter()
        stored = await offer.accept(inbox, overwrite=True)
        await sending
        done = time.perf_counter()
        await asyncio.to_thread(stored.unlink)
        return {"offer_ms": 1000 * (offered - start), "total_ms": 1000 * (done - start)}

    try:
        await one(files[0])  # the AKE
        samples: dict[str, list[dict[str, float]]] = {p.name: [] for p in files}
        for _ in range(rounds):
            for path in files:
                samples[path.name].append(await one(path))
    finally:
        for client in clients:
            await client.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-kib", type=int, nargs="*", default=[1, 256 * 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "offer")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="xfer-offer-", dir=args.dir))
    files = []
    for kib in args.sizes_kib:
        path = folder / f"file-{kib}kib.bin"
        write_random(path, kib * 1024)
        files.append(path)
    with LocalProsody(accounts=dict(ACCOUNTS)) as server:
        samples = asyncio.run(measure(server.c2s_port, folder, files, args.rounds))
    rows = {}
    print(f"{'size':>12} {'offer ms':>9} {'total ms':>9}   (medians of {args.rounds})")
    for kib, path in zip(args.sizes_kib, files, strict=True):
        got = samples[path.name]
        row = {
            key: round(statistics.median(s[key] for s in got), 1)
            for key in ("offer_ms", "total_ms")
        }
        rows[f"{kib} KiB"] = row
        print(f"{kib:>8} KiB {row['offer_ms']:>9} {row['total_ms']:>9}")
    for path in files:
        path.unlink()
    write_report(
        args.json,
        "offer",
        {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            },
            "rounds": args.rounds,
            "transport": "socks5-direct",
            "page_cache": "warm (each file written just before)",
            "medians": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
