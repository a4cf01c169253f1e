"""Load: 20 concurrent end-to-end encrypted transfers among 10 accounts, one Prosody.

    python benchmarks/load.py [--mib 16] [--accounts 10] [--dir DIR] [--json PATH]

Starts a throw-away Prosody on loopback and one process per account (this
script with ``--worker``, driven over pipes as in ``benchmarks/transfer.py``).
Each logs in with ``xfer.connect`` and the default configuration (so the
transports are the ones it picks), and trusts the fingerprints of the peers it
exchanges files with, which this process collects and hands out. Account i
sends one file to account i + 1 and one to i + 3 (round the ring): with 10
accounts, 20 transfers, two out and two in per process, no pair both ways.

1. warm-up: every pair sends a 1 KiB file, all at once (the 20 OTR AKEs), so
   that the load, like the reference, runs over OTR sessions already secure;
2. load: the 20 files (``--mib`` each, distinct random contents) all at once,
   timed from the first ``send_file`` call to the last return (by then each
   receiver has verified, fsynced and renamed its file); then this process
   checks the SHA-256 of every received file against its source;
3. reference: one file of the same size alone, account 0 to account 1 (the
   same processes, OTR already secure), so the aggregate reads as a ratio.

Reported per process: peak RSS (``getrusage`` ``ru_maxrss``, taken right after
the load, before the reference), CPU seconds during the load, bytes sent and
received; for Prosody its CPU seconds during the load (``/proc/<pid>/stat``)
and its peak RSS (``VmHWM``). MB = 10**6 bytes. Prints a table and writes
JSON (default ``benchmarks/results/load.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import add_json_option, write_report

from xfer.testing.prosody import LocalProsody

MiB = 1 << 20
PIECE = 4 * MiB
STEPS = (1, 3)  # account i sends to i + 1 and i + 3
WARMUP_BYTES = 1024
TIMEOUT = 600.0
#: The clients' own limits: generous, the machine is shared by 11 processes.
CONFIG: dict[str, Any] = {"connect_timeout": 60.0}

# -- the worker processes (one account each, driven over stdin/stdout) -----------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(message) + "\n")
    sys.stdout.flush()


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


class LoadWorker:
    """An ``xfer.connect`` client that sends files and accepts every offer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None
        self.accepting: asyncio.Task[None] | None = None

    async def op_connect(
        self, user: str, password: str, identity: str, inbox: str
    ) -> dict[str, Any]:
        import xfer

        self.client = await xfer.connect(
            f"{user}@xfer.test/load",
            password,
            identity=identity,
            host="127.0.0.1",
            port=self.port,
            tls="none",
            **CONFIG,
        )
        self.accepting = asyncio.ensure_future(self._accept(Path(inbox)))
        return {"jid": self.client.jid, "fingerprint": self.client.fingerprint}

    async def op_trust(self, peers: list[list[str]]) -> None:
        for jid, fingerprint in peers:
            self.client.trust(jid, fingerprint)

    async def op_usage(self) -> dict[str, float]:
        return _usage()

    async def _send_one(self, peer: str, path: str) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            result = await self.client.send_file(peer, path)
        except Exception as exc:
            return {"start": start, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "start": start,
            "end": time.perf_counter(),
            "peer": peer,
            "name": result.name,
            "size": result.size,
            "sealed_size": result.sealed_size,
            "transport": result.transport,
            "setup_seconds": result.setup_seconds,
        }

    async def op_send(self, files: list[list[str]]) -> dict[str, Any]:
        """Send every (peer, path) at once; one result per file."""
        results = await asyncio.gather(*(self._send_one(p, f) for p, f in files))
        return {"results": results}

    async def _accept(self, inbox: Path) -> None:
        while True:
            offer = await self.client.next_offer()
            arrived = time.perf_counter()
            try:
                path = await offer.accept(inbox)
            except Exception:
                _emit({"event": "received", "error": traceback.format_exc()})
                continue
            _emit(
                {
                    "event": "received",
                    "peer": offer.peer,
                    "name": path.name,
                    "path": str(path),
                    "bytes": path.stat().st_size,
                    "offer": arrived,
                    "done": time.perf_counter(),
                }
            )

    async def op_close(self) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
            with contextlib.suppress(BaseException):
                await self.accepting
            self.accepting = None
        if self.client is not None:
            await self.client.close()
            self.client = None


async def worker_main(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    state = LoadWorker(port)
    while line := await reader.readline():
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            await state.op_close()
            _emit({"reply": _usage()})
            return
        try:
            _emit({"reply": await getattr(state, f"op_{op}")(**request)})
        except Exception:
            _emit({"error": traceback.format_exc()})


# -- the orchestrator -------------------------------------------------------------


class Worker:
    """A worker process: ``request`` an operation, then wait for its ``reply``
    (so that several workers can work at once); ``call`` does both."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                self.messages.put(json.loads(line[3:]))
        self.messages.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer in {timeout:g} s") from None
        if message is None:
            raise RuntimeError(f"{self.name} exited ({self.process.wait()})")
        if "error" in message:
            raise RuntimeError(f"{self.name} failed:\n{message['error']}")
        return message

    def request(self, op: str, **args: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            message = self._next(timeout)
            if "event" not in message:
                reply: dict[str, Any] = message["reply"] or {}
                return reply
            self.events.append(message)

    def call(self, op: str, timeout: float = TIMEOUT, **args: object) -> dict[str, Any]:
        self.request(op, **args)
        return self.reply(timeout)

    def received(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The next ``count`` files this worker received (or failed to)."""
        while len(self.events) < count:
            message = self._next(timeout)
            if "event" not in message:
                raise RuntimeError(f"{self.name}: a reply nobody asked for: {message}")
            self.events.append(message)
        got, self.events = self.events[:count], self.events[count:]
        for event in got:
            if "error" in event:
                raise RuntimeError(f"{self.name} failed to receive:\n{event['error']}")
        return got

    def finish(self) -> dict[str, Any]:
        usage = self.call("exit", timeout=60)
        self.process.wait(30)
        return usage

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak RSS (VmHWM), if /proc tells."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def write_random(path: Path, size: int) -> bytes:
    """A file of random bytes (fsynced: no write-back during the load); its
    SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(0, size, PIECE):
            piece = os.urandom(min(PIECE, size - i))
            digest.update(piece)
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    return digest.digest()


def sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    return digest.digest()


def machine_info() -> dict[str, Any]:
    prosody = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        prosody = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "prosody"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cryptography": version("cryptography"),
        "slixmpp": version("slixmpp"),
        "prosody": prosody,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


class Load:
    """The accounts' processes on one server, and the files they exchange."""

    def __init__(self, server: LocalProsody, folder: Path, users: list[str]) -> None:
        self.server = server
        self.folder = folder
        self.users = users
        n = len(users)
        #: (sender, receiver) of each transfer
        self.pairs = [(i, (i + step) % n) for i in range(n) for step in STEPS]
        assert server._process is not None
        self.prosody_pid = server._process.pid
        self.workers: list[Worker] = []
        self.jids: list[str] = []

    def start(self) -> None:
        # Spawned first, while this process is small: a child's ru_maxrss
        # starts from its parent's peak (it is carried over fork and exec).
        self.workers = [Worker(user, self.server.c2s_port) for user in self.users]
        for w in self.workers:
            (self.folder / f"inbox-{w.name}").mkdir()
            w.request(
                "connect",
                user=w.name,
                password=self.server.accounts[w.name],
                identity=str(self.folder / f"id-{w.name}"),
                inbox=str(self.folder / f"inbox-{w.name}"),
            )
        hello = [w.reply(120) for w in self.workers]
        self.jids = [h["jid"] for h in hello]
        peers: dict[int, list[list[str]]] = {i: [] for i in range(len(self.users))}
        for s, r in self.pairs:
            peers[s].append([self.jids[r], hello[r]["fingerprint"]])
            peers[r].append([self.jids[s], hello[s]["fingerprint"]])
        for i, w in enumerate(self.workers):
            w.call("trust", peers=peers[i])

    def run(
        self, files: dict[int, list[tuple[int, Path]]]
    ) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]], float]:
        """Every worker sends its ``files`` [(receiver, path)] at once: the
        send results, each worker's receptions, Prosody's CPU seconds."""
        p0 = cpu_seconds(self.prosody_pid)
        senders = [i for i in files if files[i]]
        for i in senders:
            self.workers[i].request(
                "send", files=[[self.jids[r], str(p)] for r, p in files[i]]
            )
        sent: list[dict[str, Any]] = []
        for i in senders:
            for (r, path), result in zip(
                files[i], self.workers[i].reply()["results"], strict=True
            ):
                if "error" in result:
                    raise RuntimeError(
                        f"{self.users[i]} -> {self.users[r]} ({path.name}): "
                        f"{result['error']}"
                    )
                sent.append({"sender": i, "receiver": r, "path": path, **result})
        prosody = cpu_seconds(self.prosody_pid) - p0
        incoming = Counter(r for i in senders for r, _ in files[i])
        received = {r: self.workers[r].received(count) for r, count in incoming.items()}
        return sent, received, prosody

    def usage(self) -> list[dict[str, Any]]:
        for w in self.workers:
            w.request("usage")
        return [w.reply(60) for w in self.workers]

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.finish()
            w.kill()


def verify(
    sent: list[dict[str, Any]],
    received: dict[int, list[dict[str, Any]]],
    digests: dict[Path, bytes],
    jids: list[str],
) -> int:
    """Check that each file arrived once, whole, at its receiver, from its
    sender; delete it. Return how many were checked."""
    by_name = {(s["receiver"], s["path"].name): s for s in sent}
    checked = 0
    for r, events in received.items():
        for event in events:
            s = by_name.pop((r, event["name"]), None)
            if s is None:
                raise RuntimeError(f"{jids[r]} got an unexpected {event['name']}")
            if event["peer"] != jids[s["sender"]]:
                raise RuntimeError(f"{event['name']} came from {event['peer']}")
            path = Path(event["path"])
            if sha256_file(path) != digests[s["path"]]:
                raise RuntimeError(f"{path} differs from {s['path']} (SHA-256)")
            path.unlink()
            checked += 1
    if by_name:
        raise RuntimeError(f"never received: {sorted(n for _, n in by_name)}")
    return checked


def wall(sent: list[dict[str, Any]]) -> float:
    return float(max(s["end"] for s in sent) - min(s["start"] for s in sent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="size of each file")
    parser.add_argument(
        "--accounts", type=int, default=10, help="processes (each sends 2 files)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "load")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.port))
        return 0
    if args.accounts < 4:
        parser.error("--accounts must be at least 4")

    size = args.mib * MiB
    users = [f"load{i:02d}" for i in range(args.accounts)]
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="xfer-load-", dir=args.dir))
    try:
        with LocalProsody(accounts={u: f"{u}-pw" for u in users}) as server:
            load = Load(server, folder, users)
            floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            try:
                load.start()
                print(
                    f"{len(users)} processes logged in; writing "
                    f"{len(load.pairs)} files of {args.mib} MiB",
                    file=sys.stderr,
                )
                sources = folder / "sources"
                sources.mkdir()
                small = sources / "warm-up.bin"
                write_random(small, WARMUP_BYTES)
                files: dict[int, list[tuple[int, Path]]] = {
                    i: [] for i in range(len(users))
                }
                warmup: dict[int, list[tuple[int, Path]]] = {
                    i: [] for i in range(len(users))
                }
                digests: dict[Path, bytes] = {}
                for s, r in load.pairs:
                    path = sources / f"{users[s]}-to-{users[r]}.bin"
                    digests[path] = write_random(path, size)
                    files[s].append((r, path))
                    warmup[s].append((r, small))

                print("warm-up: 1 KiB per pair, all at once (AKEs)", file=sys.stderr)
                w_sent, w_received, _ = load.run(warmup)
                warmup_seconds = wall(w_sent)
                for events in w_received.values():
                    for event in events:
                        Path(event["path"]).unlink()

                print(f"load: {len(load.pairs)} transfers at once", file=sys.stderr)
                before = load.usage()
                sent, received, prosody_cpu = load.run(files)
                after = load.usage()
                load_seconds = wall(sent)
                checked = verify(sent, received, digests, load.jids)
                print(f"all {checked} files verified (SHA-256)", file=sys.stderr)

                print("reference: one transfer alone", file=sys.stderr)
                r0, path0 = files[0][0]
                ref_sent, ref_received, ref_prosody = load.run({0: [(r0, path0)]})
                verify(ref_sent, ref_received, digests, load.jids)
                prosody_rss = peak_rss_mib(load.prosody_pid)
            finally:
                load.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started

    total = sum(s["size"] for s in sent)
    ref = ref_sent[0]
    ref_seconds = ref["end"] - ref["start"]
    ref_mb_s = ref["size"] / ref_seconds / 1e6
    aggregate_mb_s = total / load_seconds / 1e6
    per_transfer = [s["end"] - s["start"] for s in sent]
    processes = []
    for i, user in enumerate(users):
        processes.append(
            {
                "account": user,
                "peak_rss_mib": round(after[i]["peak_rss_mib"], 1),
                "cpu_seconds": round(after[i]["cpu"] - before[i]["cpu"], 2),
                "cpu_pct": round(
                    100 * (after[i]["cpu"] - before[i]["cpu"]) / load_seconds, 1
                ),
                "files_sent": sum(1 for s in sent if s["sender"] == i),
                "files_received": sum(1 for s in sent if s["receiver"] == i),
                "bytes_sent": sum(s["size"] for s in sent if s["sender"] == i),
                "bytes_received": sum(s["size"] for s in sent if s["receiver"] == i),
            }
        )
    prosody = {
        "cpu_seconds": round(prosody_cpu, 2),
        "cpu_pct": round(100 * prosody_cpu / load_seconds, 1),
        "peak_rss_mib": None if prosody_rss is None else round(prosody_rss, 1),
        "reference_cpu_seconds": round(ref_prosody, 2),
    }
    transports = Counter(s["transport"] for s in sent)

    print(
        f"\n{len(sent)} concurrent transfers of {args.mib} MiB among {len(users)} "
        f"accounts (one process each), one Prosody; MB = 10**6 bytes"
    )
    head = (
        f"{'process':10} {'peak RSS MiB':>12} {'CPU s':>7} {'CPU %':>6} "
        f"{'sent MB':>8} {'recv MB':>8} {'files out/in':>12}"
    )
    print(head)
    print("-" * len(head))
    for row in processes:
        print(
            f"{row['account']:10} {row['peak_rss_mib']:>12} {row['cpu_seconds']:>7} "
            f"{row['cpu_pct']:>6} {row['bytes_sent'] / 1e6:>8.1f} "
            f"{row['bytes_received'] / 1e6:>8.1f} "
            f"{str(row['files_sent']) + '/' + str(row['files_received']):>12}"
        )
    rss = prosody["peak_rss_mib"]
    print(
        f"{'prosody':10} {'-' if rss is None else rss:>12} "
        f"{prosody['cpu_seconds']:>7} {prosody['cpu_pct']:>6} "
        f"{'':>8} {'':>8} {'(server)':>12}"
    )
    print(
        "peak RSS: ru_maxrss right after the load (prosody: VmHWM at the end); "
        "CPU: during the load\n(100 % = one core); this orchestrator's peak "
        f"when it spawned them (their floor): {floor:.1f} MiB"
    )
    print(
        f"\nload:      {total / 1e6:.1f} MB in {load_seconds:.2f} s wall = "
        f"{aggregate_mb_s:.1f} MB/s aggregate; per transfer: median "
        f"{statistics.median(per_transfer):.2f} s, slowest {max(per_transfer):.2f} s"
    )
    print(
        f"reference: one {args.mib} MiB transfer alone: {ref_seconds:.2f} s = "
        f"{ref_mb_s:.1f} MB/s ({ref['transport']}); aggregate / reference = "
        f"{aggregate_mb_s / ref_mb_s:.2f}"
    )
    print(
        f"transports: {dict(transports)}; warm-up (20 AKEs + 1 KiB files): "
        f"{warmup_seconds:.2f} s; all {checked} files verified (SHA-256)"
    )

    report = {
        "machine": machine_info(),
        "params": {
            "accounts": len(users),
            "transfers": len(sent),
            "mib": args.mib,
            "steps": list(STEPS),
            "client_config": CONFIG,
            "dir": str(args.dir or tempfile.gettempdir()),
            "seconds": round(elapsed, 1),
        },
        "load": {
            "wall_seconds": round(load_seconds, 3),
            "bytes": total,
            "aggregate_mb_s": round(aggregate_mb_s, 1),
            "median_transfer_seconds": round(statistics.median(per_transfer), 3),
            "slowest_transfer_seconds": round(max(per_transfer), 3),
            "transports": dict(transports),
            "verified": checked,
        },
        "reference": {
            "seconds": round(ref_seconds, 3),
            "mb_s": round(ref_mb_s, 1),
            "transport": ref["transport"],
            "aggregate_ratio": round(aggregate_mb_s / ref_mb_s, 3),
        },
        "warmup_seconds": round(warmup_seconds, 3),
        "processes": processes,
        "prosody": prosody,
        "orchestrator_peak_rss_mib_at_spawn": round(floor, 1),
        "transfers": [
            {
                "sender": users[s["sender"]],
                "receiver": users[s["receiver"]],
                "size": s["size"],
                "transport": s["transport"],
                "seconds": round(s["end"] - s["start"], 3),
                "setup_seconds": round(s["setup_seconds"], 4),
            }
            for s in sent
        ],
    }
    write_report(args.json, "load", report, lead=f"\n{elapsed:.0f} s; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
