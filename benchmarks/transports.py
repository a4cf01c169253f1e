"""Bytestream throughput through a real Prosody, beside slixmpp's own plugins.

    python benchmarks/transports.py [--mib 16] [--repeats 2] [--json PATH]

Starts a throw-away Prosody on loopback, then for each case runs a receiver
and a sender as two separate processes (as two real clients would be) that
move ``--mib`` MiB of random data, and reports MB/s (MB = 10**6 bytes;
from the sender's first request to the receiver holding every byte, hashed),
the CPU of sender, receiver and Prosody (100 % = one core), each client's
peak RSS, the stream's set-up (the sender's request until the stream is
open) and the receiver's XMPP logout after the data (not in the MB/s). The
receiver checks the SHA-256. Cases, all in the same run: xfer's IBB (iq
with a window, message) and slixmpp's xep_0047 (iq, message) at the same
block sizes; xfer's SOCKS5 (direct, and through Prosody's proxy) and
slixmpp's xep_0065 (which only uses the proxy); and plain TCP on loopback
through asyncio's streams as a ceiling. Cases are interleaved across
repeats; the table shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import add_json_option, write_report

from xfer.testing.prosody import LocalProsody

MiB = 1 << 20
ACCOUNTS = {"sender": "sender-pw", "receiver": "receiver-pw"}

CASES = {
    "xfer ibb iq 65535 w16": ("xfer", "iq", 65535),
    "slixmpp ibb iq 65535": ("slixmpp", "iq", 65535),
    "xfer ibb iq 4096 w16": ("xfer", "iq", 4096),
    "slixmpp ibb iq 4096": ("slixmpp", "iq", 4096),
    "xfer ibb message 65535": ("xfer", "message", 65535),
    "slixmpp ibb message 65535": ("slixmpp", "message", 65535),
    "xfer socks5 direct": ("xfer", "s5-direct", 1 << 20),
    "xfer socks5 proxied": ("xfer", "s5-proxy", 1 << 20),
    "slixmpp socks5 proxied": ("slixmpp", "s5-proxy", 65536),
    "raw tcp (ceiling)": ("tcp", "", 65536),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the two client roles (run as subprocesses) ---------------------------------


async def _client(port: int, user: str, impl: str, block: int):  # noqa: ANN202
    import xfer.xmpp.ibb as ibb_module
    from xfer.xmpp.client import connect

    c = await connect(
        f"{user}@xfer.test/bench", ACCOUNTS[user], "127.0.0.1", port, tls="none"
    )
    import xfer.xmpp.socks5 as socks5_module

    if impl == "xfer":
        c.register_plugin(
            "xfer_ibb", {"authorize": lambda *_: True, "window": 16}, module=ibb_module
        )
        c.register_plugin(
            "xfer_socks5", {"authorize": lambda *_: True}, module=socks5_module
        )
    else:
        c.register_plugin("xep_0047", {"auto_accept": True, "max_block_size": 65535})
        c.register_plugin("xep_0030")
        c.register_plugin("xep_0065", {"auto_accept": True})
    return c


async def receiver(port: int, impl: str, mode: str, block: int) -> dict[str, object]:
    h = hashlib.sha256()
    n = 0
    if impl == "tcp":
        done = asyncio.Event()

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal n
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            writer.close()
            done.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        await done.wait()
        server.close()
    else:
        c = await _client(port, "receiver", impl, block)
        print("READY", c.boundjid.full, flush=True)
        if impl == "slixmpp" and mode.startswith("s5"):
            closed = asyncio.Event()

            def on_data(data: bytes) -> None:
                nonlocal n
                h.update(data)
                n += len(data)

            c.add_event_handler("socks5_data", on_data)
            c.add_event_handler("socks5_closed", lambda _e: closed.set())
            await asyncio.wait_for(closed.wait(), 600)
        elif impl == "xfer" and mode.startswith("s5"):
            stream = await c.plugin["xfer_socks5"].accept(60)
            while chunk := await stream.read():
                h.update(chunk)
                n += len(chunk)
            await stream.close()
        elif impl == "xfer":
            stream = await c.plugin["xfer_ibb"].accept(60)
            while chunk := await stream.read():
                h.update(chunk)
                n += len(chunk)
        else:
            started: asyncio.Future = asyncio.get_running_loop().create_future()
            c.add_event_handler("ibb_stream_start", started.set_result)
            stream = await asyncio.wait_for(started, 60)
            # Consume as the baseline did: a task awaiting the receive queue
            # (slixmpp's gather() concatenates bytes, which is quadratic).
            while not (stream.stream_in_closed and stream.recv_queue.empty()):
                try:
                    chunk = await asyncio.wait_for(stream.recv_queue.get(), 0.5)
                except TimeoutError:
                    continue
                h.update(chunk)
                n += len(chunk)
        done_at = time.perf_counter()
        await c.stop()
        return {"bytes": n, "sha256": h.hexdigest(), "done": done_at}
    return {"bytes": n, "sha256": h.hexdigest(), "done": time.perf_counter()}


async def sender(
    port: int, impl: str, mode: str, block: int, target: str, mib: int
) -> dict[str, object]:
    payload = os.urandom(mib * MiB)
    digest = hashlib.sha256(payload).hexdigest()
    if impl == "tcp":
        start = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", int(target))
        opened = time.perf_counter()
        for i in range(0, len(payload), block):
            writer.write(payload[i : i + block])
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        return {"sha256": digest, "start": start, "opened": opened}
    c = await _client(port, "sender", impl, block)
    start = time.perf_counter()
    if mode.startswith("s5"):
        if impl == "xfer":
            direct = mode == "s5-direct"
            out = await c.plugin["xfer_socks5"].open(
                target, direct=direct, proxy=not direct
            )
            opened = time.perf_counter()
            for i in range(0, len(payload), block):
                await out.write(payload[i : i + block])
            await out.close()
        else:
            sock = await c.plugin["xep_0065"].handshake(target)
            opened = time.perf_counter()
            for i in range(0, len(payload), block):
                await sock.write(payload[i : i + block])
            while sock.transport.get_write_buffer_size():  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.001)
            sock.transport.close()
    elif impl == "xfer":
        stream = await c.plugin["xfer_ibb"].open(
            target, block_size=block, use_messages=mode == "message"
        )
        opened = time.perf_counter()
        for i in range(0, len(payload), MiB):
            await stream.write(payload[i : i + MiB])
        await stream.close()
    else:
        stream = await c.plugin["xep_0047"].open_stream(
            target, block_size=block, use_messages=mode == "message"
        )
        opened = time.perf_counter()
        await stream.sendall(payload)
        await stream.close()
    await c.stop()
    return {"sha256": digest, "start": start, "opened": opened}


def role_main(args: argparse.Namespace) -> int:
    impl, mode, block = CASES[args.case]
    if args.role == "receiver":
        result = asyncio.run(receiver(args.port, impl, mode, block))
    else:
        result = asyncio.run(
            sender(args.port, impl, mode, block, args.target, args.mib[0])
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        end=time.perf_counter(),
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
    )
    print("RESULT", json.dumps(result), flush=True)
    return 0


# -- the orchestrator ---------------------------------------------------------------


def run_case(server: LocalProsody, case: str, mib: int) -> dict[str, float]:
    me = [sys.executable, __file__]
    base = ["--port", str(server.c2s_port), "--case", case, "--mib", str(mib)]
    recv = subprocess.Popen(
        [*me, "--role", "receiver", *base], stdout=subprocess.PIPE, text=True
    )
    assert recv.stdout is not None
    ready = recv.stdout.readline().split()
    assert ready, "the receiver did not start"
    assert ready[0] == "READY", ready
    assert server._process is not None
    prosody_pid = server._process.pid
    p0, t0 = cpu_seconds(prosody_pid), time.perf_counter()
    send = subprocess.run(
        [*me, "--role", "sender", *base, "--target", ready[1]],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if send.returncode:
        recv.kill()
        raise RuntimeError(f"{case}: the sender failed:\n{send.stderr[-3000:]}")
    r_out = recv.communicate(timeout=900)[0]
    wall = time.perf_counter() - t0
    s = json.loads(
        next(line for line in send.stdout.splitlines() if line.startswith("RESULT"))[7:]
    )
    r = json.loads(
        next(line for line in r_out.splitlines() if line.startswith("RESULT"))[7:]
    )
    if r["sha256"] != s["sha256"] or r["bytes"] != mib * MiB:
        raise RuntimeError(f"{case}: data did not arrive intact")
    # From the sender's request to the receiver holding every byte, hashed;
    # the XMPP logout afterwards is not part of the transfer (perf_counter is
    # system-wide: CLOCK_MONOTONIC).
    seconds = r["done"] - s["start"]
    return {
        "mb_s": mib * MiB / seconds / 1e6,
        "setup_ms": 1000 * (s["opened"] - s["start"]),
        "logout_ms": 1000 * (r["end"] - r["done"]),
        "sender_cpu_pct": 100 * s["cpu"] / wall,
        "receiver_cpu_pct": 100 * r["cpu"] / wall,
        "prosody_cpu_pct": 100 * (cpu_seconds(prosody_pid) - p0) / wall,
        "sender_peak_rss_mib": s["peak_rss_mib"],
        "receiver_peak_rss_mib": r["peak_rss_mib"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=2)
    add_json_option(parser, "transports")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument(
        "--role", choices=["sender", "receiver"], help=argparse.SUPPRESS
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        return role_main(args)
    keys = [f"{case} @{mib} MiB" for mib in args.mib for case in args.cases]
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    with LocalProsody(accounts=dict(ACCOUNTS)) as server:
        for r in range(args.repeats):
            for mib in args.mib:
                for case in args.cases:
                    print(
                        f"round {r + 1}/{args.repeats}: {case} {mib} MiB",
                        file=sys.stderr,
                    )
                    samples[f"{case} @{mib} MiB"].append(run_case(server, case, mib))
    rows = {
        case: {k: round(statistics.median(s[k] for s in runs), 1) for k in runs[0]}
        for case, runs in samples.items()
    }
    print(f"\nmedians of {args.repeats}; CPU 100% = one core; RSS = peak per process")
    print(
        f"{'case':38} {'MB/s':>7} {'sender%':>8} {'recv%':>6} {'prosody%':>9} "
        f"{'send RSS':>9} {'recv RSS':>9} {'setup ms':>9} {'logout ms':>10}"
    )
    for case, row in rows.items():
        print(
            f"{case:38} {row['mb_s']:>7} {row['sender_cpu_pct']:>8} "
            f"{row['receiver_cpu_pct']:>6} {row['prosody_cpu_pct']:>9} "
            f"{row['sender_peak_rss_mib']:>8}M {row['receiver_peak_rss_mib']:>8}M "
            f"{row['setup_ms']:>9} {row['logout_ms']:>10}"
        )
    ratios = {}
    for ours, theirs in (
        ("xfer ibb iq 65535 w16", "slixmpp ibb iq 65535"),
        ("xfer ibb iq 4096 w16", "slixmpp ibb iq 4096"),
        ("xfer ibb message 65535", "slixmpp ibb message 65535"),
        ("xfer socks5 direct", "slixmpp socks5 proxied"),
        ("xfer socks5 proxied", "slixmpp socks5 proxied"),
    ):
        for mib in args.mib:
            a, b = f"{ours} @{mib} MiB", f"{theirs} @{mib} MiB"
            if a in rows and b in rows:
                ratios[f"{a} / {theirs}"] = round(rows[a]["mb_s"] / rows[b]["mb_s"], 2)
    for name, value in ratios.items():
        print(f"ratio {name}: {value}x")
    report = {
        "mib": args.mib,
        "repeats": args.repeats,
        "results": rows,
        "ratios": ratios,
        "samples": samples,
    }
    write_report(args.json, "transports", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
