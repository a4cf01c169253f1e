"""A stream beside a file of the same size, and the delay of a live stream.

    python benchmarks/stream.py [--mib 128] [--rounds 3] [--messages 300]

Starts a throw-away Prosody on loopback and two ``xfer.connect`` clients in
this one process (both sides share its event loop and its cores, for the
file and the stream alike), forced onto direct SOCKS5 as
``tests/integration/test_transfer.py`` forces it. In interleaved rounds:

* throughput: ``send_file`` of a file of ``--mib`` MiB against
  ``send_stream`` of as many bytes from an async source (a 1 MiB random
  block, repeated), each timed from the call to its return (the receiver has
  verified everything; the file is also fsynced and renamed, the stream's
  plaintext is only counted). The ratio is stream / file.
* live delay: ``--messages`` messages of 200 bytes, one every 10 ms, through
  a live stream (``flush_interval`` 15 ms by default, and 1 ms): the time from
  the source yielding a message to the receiver's iterator returning it
  (``perf_counter`` on both sides of one process), p50 and p99, beside the
  flush interval that bounds what the sender adds.

Figures are medians over the rounds; MB = 10**6 bytes. It prints a table and
writes JSON (default ``benchmarks/results/stream.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import add_json_option, write_report

import xfer
from xfer.testing.prosody import LocalProsody

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

MiB = 1 << 20
MESSAGE = 200
EVERY = 0.010


async def login(server: LocalProsody, name: str, home: Path) -> xfer.Client:
    return await xfer.connect(
        f"{name}@{server.domain}/bench",
        f"{name}-pw",
        identity=home / name,
        host="127.0.0.1",
        port=server.c2s_port,
        tls="none",
        socks5_proxy=False,
    )


async def blocks(total: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


async def file_round(
    alice: xfer.Client, bob: xfer.Client, src: Path, inbox: Path
) -> float:
    async def receive() -> None:
        offer = await bob.next_offer()
        path = await offer.accept(inbox, overwrite=True)
        path.unlink()

    started = time.perf_counter()
    await asyncio.gather(receive(), alice.send_file(bob.jid, src))
    return time.perf_counter() - started


async def stream_round(
    alice: xfer.Client, bob: xfer.Client, total: int, block: bytes
) -> float:
    async def receive() -> None:
        offer = await bob.next_offer()
        got = 0
        async for piece in await offer.accept_stream():
            got += len(piece)
        assert got == total

    started = time.perf_counter()
    await asyncio.gather(receive(), alice.send_stream(bob.jid, blocks(total, block)))
    return time.perf_counter() - started


async def live_round(
    alice: xfer.Client, bob: xfer.Client, messages: int, flush: float
) -> list[float]:
    sent_at: list[float] = []
    delays: list[float] = []

    async def source() -> AsyncIterator[bytes]:
        for _ in range(messages):
            sent_at.append(time.perf_counter())
            yield os.urandom(MESSAGE)
            await asyncio.sleep(EVERY)

    async def receive() -> None:
        offer = await bob.next_offer()
        got = 0
        async for piece in await offer.accept_stream():
            now = time.perf_counter()
            got += len(piece)
            while len(delays) < got // MESSAGE:
                delays.append(now - sent_at[len(delays)])

    await asyncio.gather(
        receive(),
        alice.send_stream(bob.jid, source(), live=True, flush_interval=flush),
    )
    return delays


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def run(
    args: argparse.Namespace, server: LocalProsody, home: Path
) -> dict[str, Any]:
    alice, bob = await login(server, "alice", home), await login(server, "bob", home)
    alice.trust(bob.jid, bob.fingerprint)
    bob.trust(alice.jid, alice.fingerprint)
    total = args.mib * MiB
    block = os.urandom(MiB)
    src = home / "file.bin"
    with src.open("wb") as f:
        for _ in range(args.mib):
            f.write(block)
    inbox = home / "inbox"
    inbox.mkdir()
    await stream_round(alice, bob, MiB, block)  # OTR secure, paths warm
    files: list[float] = []
    streams: list[float] = []
    live: dict[float, list[float]] = {0.015: [], 0.001: []}
    try:
        for _ in range(args.rounds):
            files.append(await file_round(alice, bob, src, inbox))
            streams.append(await stream_round(alice, bob, total, block))
            for flush, delays in live.items():
                delays.extend(await live_round(alice, bob, args.messages, flush))
    finally:
        await alice.close()
        await bob.close()
    file_mbs = total / statistics.median(files) / 1e6
    stream_mbs = total / statistics.median(streams) / 1e6
    return {
        "mib": args.mib,
        "rounds": args.rounds,
        "file_mb_s": round(file_mbs, 1),
        "stream_mb_s": round(stream_mbs, 1),
        "stream_over_file": round(stream_mbs / file_mbs, 3),
        "live": {
            f"{flush * 1000:g} ms": {
                "messages": len(delays),
                "p50_ms": round(percentile(delays, 0.50) * 1000, 2),
                "p99_ms": round(percentile(delays, 0.99) * 1000, 2),
            }
            for flush, delays in live.items()
        },
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300)
    add_json_option(parser, "stream")
    args = parser.parse_args()
    with (
        LocalProsody(accounts={"alice": "alice-pw", "bob": "bob-pw"}) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = asyncio.run(run(args, server, Path(tmp)))
    print(f"direct SOCKS5, {args.mib} MiB, median of {args.rounds}:")
    print(f"  file   {report['file_mb_s']:8.1f} MB/s")
    print(
        f"  stream {report['stream_mb_s']:8.1f} MB/s  ({report['stream_over_file']:.2f} of the file)"
    )
    for flush, figures in report["live"].items():
        print(
            f"  live, flush {flush}: {figures['messages']} messages of {MESSAGE} B, "
            f"delay p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms"
        )
    write_report(args.json, "stream", report)


if __name__ == "__main__":
    main()
