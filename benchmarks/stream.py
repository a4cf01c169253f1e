"""Streams end to end through a real Prosody: pipe throughput, live latency, memory.

    python benchmarks/stream.py [--parts pipe live memory] [--size-mib 256]
                                [--rounds 5] [--seconds 30] [--latency-rounds 3]
                                [--flush-ms 15 1] [--kinds ...] [--no-cli]
                                [--memory-mib 64 1024] [--long] [--dir DIR]
                                [--json PATH]

Starts a throw-away Prosody on loopback. Sender and receiver are always two
separate processes. In the same run:

* pipe: ``--size-mib`` MiB of random data sent over direct SOCKS5 as a
  stream (the sender's ``Client.send_stream`` reading a pipe fed by ``cat``,
  through ``input_pieces``, as ``xfer send -`` does; the receiver's
  ``accept_stream`` written by ``output_sink`` into a file, as
  ``xfer receive --stdout > FILE`` does, then fsynced) and as a file
  (``send_file`` of the same file; the receiver verifies, fsyncs and
  renames), alternating; MB/s from the sender's call to the receiver's
  end (the stream's last verified byte fsynced; the file renamed). Both
  received files are read back afterwards and their SHA-256 checked, as is
  the SHA-256 the sender was told. Ratio = stream / file per round, median.
* live: a writer process emits a 200-byte message every 10 ms for
  ``--seconds`` seconds (split over ``--latency-rounds``) into a pipe that
  the sender's ``send_stream(live=True, flush_interval=...)`` reads; each
  message carries its number and the writer's ``CLOCK_MONOTONIC`` time of
  the write (system-wide on Linux, so comparable across processes) and a
  filler derived from its number. The receiver takes the time when
  ``accept_stream`` yields the verified piece holding the message's last
  byte, and checks every message. One-way latency = that minus the
  writer's time. Over direct SOCKS5, the proxy and IBB, for each flush
  interval of ``--flush-ms``; beside the raw transport's round trip in the
  same run: a 200-byte echo every 10 ms over a plain xfer SOCKS5 (direct,
  proxy) or IBB bytestream (no encryption, no OTR), from write to the
  whole echo read back. Added by xfer = xfer one-way percentile (p50, p99)
  minus half the raw round trip's median (the same half for both). A CLI
  variant (``writer | xfer send -`` and ``xfer receive --stdout | reader``,
  the CLI's default transport on loopback, its default flush of 15 ms) runs
  once per round; its writer starts 1 s after the receiver was offered the
  stream (what it wrote during the log-in and the AKE would wait for them).
* memory: ``xfer send -`` and ``xfer receive --stdout > /dev/null`` as
  separate processes (fresh logins, OTR AKE), a generated stream of 64 MiB
  and 1 GiB (and 8 GiB with ``--long``); the peak RSS of each process from
  ``wait4`` (its ``ru_maxrss``), the SHA-256 both print checked.

Prints tables and writes JSON (default ``benchmarks/results/stream.json``).
MB = 10**6 bytes, MiB = 2**20.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import WorkerProcess, add_json_option, emit, write_report

from xfer.aio.stdio import InputReader
from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing

if TYPE_CHECKING:
    from collections.abc import Iterator

    from xfer.xmpp.transfer.sending import SendResult

MiB = 1 << 20
GiB = 1 << 30
ACCOUNTS = {"sender": "sender-pw", "receiver": "receiver-pw"}
KINDS = ("socks5-direct", "socks5-proxy", "ibb")
IBB_BLOCK = 32767  # as a transfer's IBB uses
TIMEOUT = 600.0
MESSAGE = 200
HEAD = struct.Struct(">QQ")  # message number, writer's CLOCK_MONOTONIC ns
BLOCK = 16 * MiB  # the memory part's generated stream repeats a block this long
#: The CLI live run's writer starts this long after the receiver was offered
#: the stream: what it writes before the transport is up would wait for it.
CLI_GATE = 1.0
TARGET_RATIO = 0.9
TARGET_ADDED_P50_MS = 5.0
TARGET_ADDED_P99_MS = 30.0
TARGET_RSS_MIB = 100.0


def filler(n: int) -> bytes:
    """The bytes after message ``n``'s header, known to both ends."""
    seed = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return (seed * 6)[: MESSAGE - HEAD.size]


def message(n: int) -> bytes:
    return HEAD.pack(n, time.clock_gettime_ns(time.CLOCK_MONOTONIC)) + filler(n)


class Messages:
    """Splits received bytes into messages; checks each, notes its latency."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.latencies_us: list[float] = []
        self.bad = 0

    def feed(self, data: bytes, now_ns: int) -> None:
        self.buffer += data
        while len(self.buffer) >= MESSAGE:
            record = bytes(self.buffer[:MESSAGE])
            del self.buffer[:MESSAGE]
            n, stamp = HEAD.unpack_from(record)
            if record[HEAD.size :] != filler(n) or n != len(self.latencies_us):
                self.bad += 1
            self.latencies_us.append((now_ns - stamp) / 1000)


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# -- small roles run as processes of their own -------------------------------------


def writer_main(seconds: float, interval_ms: float, gated: bool = False) -> None:
    """Write one message every ``interval_ms`` to stdout for ``seconds``
    (``gated``: once a line came on stdin)."""
    if gated:
        sys.stdin.readline()
    out = sys.stdout.fileno()
    count = int(seconds * 1000 / interval_ms)
    start = time.monotonic()
    for n in range(count):
        due = start + n * interval_ms / 1000
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        data = message(n)
        while data:
            data = data[os.write(out, data) :]


def reader_main() -> None:
    """Read messages from stdin; print their latencies as JSON at the end."""
    got = Messages()
    fd = sys.stdin.fileno()
    total = 0
    while data := os.read(fd, 1 << 16):
        got.feed(data, now_ns())
        total += len(data)
    print(
        json.dumps({"latencies_us": got.latencies_us, "bad": got.bad, "bytes": total})
    )


def generated_block() -> bytes:
    return random.Random(16).randbytes(BLOCK)


def source_main(size: int) -> None:
    """Write ``size`` bytes (a random block, repeated) to stdout."""
    block = memoryview(generated_block())
    out = sys.stdout.fileno()
    left = size
    while left:
        view = block[: min(left, BLOCK)]
        while view:
            view = view[os.write(out, view) :]
        left -= min(left, BLOCK)


def generated_sha256(size: int) -> str:
    block = generated_block()
    h = hashlib.sha256()
    for i in range(0, size, BLOCK):
        h.update(block[: min(BLOCK, size - i)])
    return h.hexdigest()


# -- the worker processes (one client each, driven over stdin/stdout) ---------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(4 * MiB):
            h.update(piece)
    return h.hexdigest()


class _PipeOf(InputReader):
    """The output of ``argv``, read as ``xfer send -`` reads standard input:
    an :class:`~xfer.aio.stdio.InputReader` on the pipe, which the sender
    reads into its own buffer (not as an iterable of pieces)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        super().__init__(self.proc.stdout.fileno())

    async def aclose(self) -> None:
        await super().aclose()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
            await asyncio.to_thread(self.proc.wait)


class EncryptedWorker:
    """An ``xfer.connect`` client: sends files and streams, or receives them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None
        self.accepting: asyncio.Task[None] | None = None

    async def op_connect(
        self,
        user: str,
        resource: str,
        identity: str,
        config: dict[str, Any],
        inbox: str | None = None,
    ) -> dict[str, Any]:
        import xfer

        await self.op_close()
        self.client = await xfer.connect(
            f"{user}@xfer.test/{resource}",
            ACCOUNTS[user],
            identity=identity,
            host="127.0.0.1",
            port=self.port,
            tls="none",
            **config,
        )
        if inbox is not None:
            self.accepting = asyncio.ensure_future(self._accept(Path(inbox)))
        return {"jid": self.client.jid, "fingerprint": self.client.fingerprint}

    async def op_trust(self, jid: str, fingerprint: str) -> None:
        self.client.trust(jid, fingerprint)

    @staticmethod
    def _result(start: float, cpu: float, result: SendResult) -> dict[str, Any]:
        return {
            "cpu": _cpu() - cpu,
            "start": start,
            "end": time.perf_counter(),
            "transport": result.transport,
            "size": result.size,
            "sha256": result.sha256.hex(),
        }

    async def op_send_file(self, peer: str, path: str) -> dict[str, Any]:
        start, cpu = time.perf_counter(), _cpu()
        result = await self.client.send_file(peer, path)
        return self._result(start, cpu, result)

    async def op_send_pipe(self, peer: str, path: str) -> dict[str, Any]:
        from xfer.aio.stream import FLUSH_INTERVAL

        start, cpu = time.perf_counter(), _cpu()
        # A pipe is live for the CLI (a FIFO on standard input): so here.
        result = await self.client.send_stream(
            peer,
            _PipeOf(["cat", path]),
            name="pipe",
            live=True,
            flush_interval=FLUSH_INTERVAL,
        )
        return self._result(start, cpu, result)

    async def op_send_live(
        self, peer: str, seconds: float, interval_ms: float, flush_ms: float
    ) -> dict[str, Any]:
        argv = [sys.executable, __file__, "--writer", str(seconds), str(interval_ms)]
        start, cpu = time.perf_counter(), _cpu()
        result = await self.client.send_stream(
            peer,
            _PipeOf(argv),
            name="live",
            live=True,
            flush_interval=flush_ms / 1000,
        )
        return self._result(start, cpu, result)

    async def _accept(self, inbox: Path) -> None:
        from xfer.aio.stdio import output_sink

        while True:
            offer = await self.client.next_offer()
            cpu = _cpu()
            try:
                if not offer.is_stream:
                    path = await offer.accept(inbox)
                    done, cpu = time.perf_counter(), _cpu() - cpu
                    digest = await asyncio.to_thread(_sha256_file, path)
                    size = path.stat().st_size
                    await asyncio.to_thread(path.unlink)
                    emit(
                        {
                            "event": "received",
                            "done": done,
                            "cpu": cpu,
                            "bytes": size,
                            "sha256": digest,
                        }
                    )
                    continue
                stream = await offer.accept_stream()
                if offer.name == "live":
                    got = Messages()
                    async for piece in stream:
                        got.feed(piece, now_ns())
                    done = time.perf_counter()
                    emit(
                        {
                            "event": "received",
                            "done": done,
                            "bytes": stream.verified,
                            "sha256": stream.sha256.hex(),
                            "latencies_us": got.latencies_us,
                            "bad": got.bad + bool(got.buffer),
                        }
                    )
                    continue
                path = inbox / "stream.bin"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    async with output_sink(fd) as sink:
                        await stream.write_to(sink)
                    await asyncio.to_thread(os.fsync, fd)
                finally:
                    os.close(fd)
                done, cpu = time.perf_counter(), _cpu() - cpu
                digest = await asyncio.to_thread(_sha256_file, path)
                await asyncio.to_thread(path.unlink)
                emit(
                    {
                        "event": "received",
                        "done": done,
                        "cpu": cpu,
                        "bytes": stream.verified,
                        "sha256": digest,
                        "library_sha256": stream.sha256.hex(),
                    }
                )
            except Exception:
                emit({"event": "received", "error": traceback.format_exc()})

    async def op_close(self) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
            with contextlib.suppress(BaseException):
                await self.accepting
            self.accepting = None
        if self.client is not None:
            await self.client.close()
            self.client = None


class PlainWorker:
    """The bare bytestream plugins, no encryption: echoes, or measures round
    trips."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None
        self.tasks: list[asyncio.Task[None]] = []

    async def op_connect(
        self, user: str, resource: str, echo: bool = False
    ) -> dict[str, Any]:
        import xfer.xmpp.ibb as ibb_module
        import xfer.xmpp.socks5 as socks5_module
        from xfer.xmpp.client import connect

        self.client = await connect(
            f"{user}@xfer.test/{resource}",
            ACCOUNTS[user],
            "127.0.0.1",
            self.port,
            tls="none",
        )
        self.client.register_plugin(
            "xfer_ibb", {"authorize": lambda *_: True}, module=ibb_module
        )
        self.client.register_plugin(
            "xfer_socks5", {"authorize": lambda *_: True}, module=socks5_module
        )
        if echo:
            for name in ("xfer_ibb", "xfer_socks5"):
                self.tasks.append(asyncio.ensure_future(self._echo(name)))
        return {"jid": str(self.client.boundjid.full)}

    async def _echo(self, plugin: str) -> None:
        while True:
            stream = await self.client.plugin[plugin].accept()
            with contextlib.suppress(Exception):
                while data := await stream.read(1 << 16):
                    await stream.write(data)
                await stream.close()

    async def op_rtt(
        self, peer: str, kind: str, count: int, interval_ms: float
    ) -> dict[str, Any]:
        if kind == "ibb":
            stream = await self.client.plugin["xfer_ibb"].open(
                peer, block_size=IBB_BLOCK
            )
        else:
            direct = kind == "socks5-direct"
            stream = await self.client.plugin["xfer_socks5"].open(
                peer, direct=direct, proxy=not direct
            )
        rtts: list[float] = []
        start = time.monotonic()
        for n in range(count):
            delay = start + n * interval_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data = message(n)
            t0 = now_ns()
            await stream.write(data)
            back = b""
            while len(back) < len(data):
                piece = await stream.read(1 << 16)
                if not piece:
                    raise RuntimeError("the echo ended early")
                back += piece
            rtts.append((now_ns() - t0) / 1000)
            if back != data:
                raise RuntimeError("the echo differs")
        await stream.close()
        return {"rtts_us": rtts}

    async def op_close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.client is not None:
            await self.client.stop()
            self.client = None


async def worker_main(kind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    state = EncryptedWorker(port) if kind == "encrypted" else PlainWorker(port)
    while line := await reader.readline():
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            await state.op_close()
            return
        try:
            emit({"reply": await getattr(state, f"op_{op}")(**request)})
        except Exception:
            emit({"error": traceback.format_exc()})


# -- the orchestrator ---------------------------------------------------------------


class Worker(WorkerProcess):
    """A worker process of this script (``--worker KIND``)."""

    def __init__(self, name: str, kind: str, port: int) -> None:
        argv = [sys.executable, __file__, "--worker", kind, "--port", str(port)]
        super().__init__(name, argv, TIMEOUT)


@contextlib.contextmanager
def pair(kind: str, port: int) -> Iterator[tuple[Worker, Worker]]:
    sender = Worker(f"{kind} sender", kind, port)
    receiver = Worker(f"{kind} receiver", kind, port)
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def write_random(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(0, size, 4 * MiB):
            piece = os.urandom(min(4 * MiB, size - i))
            h.update(piece)
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, server: LocalProsody, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.sessions = 0

    def connect(
        self, sender: Worker, receiver: Worker, kind: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fresh identities, trusting each other; the receiver accepts all."""
        self.sessions += 1
        n = self.sessions
        config = forcing(kind)
        inbox = self.folder / f"inbox-{n}"
        inbox.mkdir()
        a = sender.call(
            "connect",
            user="sender",
            resource=f"s{n}",
            identity=str(self.folder / f"id-s{n}"),
            config=config,
        )
        b = receiver.call(
            "connect",
            user="receiver",
            resource=f"r{n}",
            identity=str(self.folder / f"id-r{n}"),
            config=config,
            inbox=str(inbox),
        )
        sender.call("trust", jid=b["jid"], fingerprint=b["fingerprint"])
        receiver.call("trust", jid=a["jid"], fingerprint=a["fingerprint"])
        return a, b

    # -- part 1 ------------------------------------------------------------------

    def pipe(self, path: Path, sha256: str, rounds: int) -> dict[str, Any]:
        size = path.stat().st_size
        samples: dict[str, list[float]] = {"stream": [], "file": []}
        cpu: dict[str, list[dict[str, float]]] = {"stream": [], "file": []}
        transports: set[str] = set()
        with pair("encrypted", self.server.c2s_port) as (sender, receiver):
            _, b = self.connect(sender, receiver, "socks5-direct")
            # The AKE first, with a small stream.
            warm = self.folder / "warm.bin"
            warm.write_bytes(os.urandom(1000))
            sender.call("send_pipe", peer=b["jid"], path=str(warm))
            receiver.event()
            for r in range(rounds):
                order = ("stream", "file") if r % 2 == 0 else ("file", "stream")
                for how in order:
                    print(f"pipe {r + 1}/{rounds}: {how}", file=sys.stderr)
                    op = "send_pipe" if how == "stream" else "send_file"
                    s = sender.call(op, peer=b["jid"], path=str(path))
                    got = receiver.event()
                    if "error" in got:
                        raise RuntimeError(got["error"])
                    said = {s["sha256"], got["sha256"], got.get("library_sha256")}
                    said.discard(None)
                    if said != {sha256} or got["bytes"] != size or s["size"] != size:
                        raise RuntimeError(f"{how}: the bytes differ")
                    transports.add(s["transport"])
                    wall = got["done"] - s["start"]
                    samples[how].append(size / wall / 1e6)
                    cpu[how].append(
                        {
                            "sender_cpu_pct": round(100 * s["cpu"] / wall, 1),
                            "receiver_cpu_pct": round(100 * got["cpu"] / wall, 1),
                            # CPU time per GiB: steadier than MB/s when
                            # other work shares the machine.
                            "sender_cpu_s_per_gib": round(s["cpu"] * GiB / size, 3),
                            "receiver_cpu_s_per_gib": round(got["cpu"] * GiB / size, 3),
                        }
                    )
        ratios = [
            a / b for a, b in zip(samples["stream"], samples["file"], strict=True)
        ]
        ratio = statistics.median(ratios)
        return {
            "mib": size // MiB,
            "transport": sorted(transports),
            "stream_mb_s": round(statistics.median(samples["stream"]), 1),
            "file_mb_s": round(statistics.median(samples["file"]), 1),
            "ratio": round(ratio, 3),
            "target": f"ratio >= {TARGET_RATIO}",
            "target_met": ratio >= TARGET_RATIO,
            "sha256_checked": True,
            "cpu_pct_median": {
                how: {
                    key: statistics.median(x[key] for x in rows)
                    for key in (
                        "sender_cpu_pct",
                        "receiver_cpu_pct",
                        "sender_cpu_s_per_gib",
                        "receiver_cpu_s_per_gib",
                    )
                }
                for how, rows in cpu.items()
            },
            "samples_mb_s": samples,
            "ratios": [round(x, 3) for x in ratios],
        }

    # -- part 2 ------------------------------------------------------------------

    def live(
        self, kind: str, seconds: float, flush_ms: float
    ) -> tuple[list[float], int]:
        with pair("encrypted", self.server.c2s_port) as (sender, receiver):
            _, b = self.connect(sender, receiver, kind)
            # The AKE and a first transfer out of the way.
            warm = self.folder / "warm.bin"
            warm.write_bytes(os.urandom(1000))
            sender.call("send_pipe", peer=b["jid"], path=str(warm))
            receiver.event()
            s = sender.call(
                "send_live",
                peer=b["jid"],
                seconds=seconds,
                interval_ms=10,
                flush_ms=flush_ms,
            )
            got = receiver.event()
        if "error" in got:
            raise RuntimeError(got["error"])
        expected = int(seconds * 100)
        if s["transport"] != kind:
            raise RuntimeError(f"{kind}: took {s['transport']}")
        if got["bad"] or len(got["latencies_us"]) != expected:
            raise RuntimeError(
                f"{kind}: {got['bad']} bad, {len(got['latencies_us'])}/{expected}"
            )
        if got["sha256"] != s["sha256"] or got["bytes"] != expected * MESSAGE:
            raise RuntimeError(f"{kind}: the stream's bytes differ")
        return got["latencies_us"], got["bytes"]

    def rtt(self, kind: str, count: int) -> list[float]:
        self.sessions += 1
        n = self.sessions
        with pair("plain", self.server.c2s_port) as (sender, receiver):
            sender.call("connect", user="sender", resource=f"s{n}")
            b = receiver.call("connect", user="receiver", resource=f"r{n}", echo=True)
            out: list[float] = sender.call(
                "rtt", peer=b["jid"], kind=kind, count=count, interval_ms=10
            )["rtts_us"]
        return out

    # -- the command line (live CLI variant, memory) ------------------------------

    def cli_env(self, user: str) -> dict[str, str]:
        return {
            **os.environ,
            "XFER_JID": f"{user}@xfer.test/cli",
            "XFER_PASSWORD": ACCOUNTS[user],
            "XFER_HOST": "127.0.0.1",
            "XFER_PORT": str(self.server.c2s_port),
            "XFER_TLS": "none",
            "XFER_DATA_DIR": str(self.folder / f"cli-{user}"),
            "XFER_CONFIG": str(self.folder / "no-config.toml"),
        }

    def cli(self, user: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "xfer_cli", *args],
            env=self.cli_env(user),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"xfer {' '.join(args)}: {done.stderr}")
        return done.stdout

    def cli_trust(self) -> None:
        prints = {
            u: json.loads(self.cli(u, "keys", "--json"))["fingerprint"]
            for u in ACCOUNTS
        }
        self.cli("sender", "trust", "receiver@xfer.test", prints["receiver"])
        self.cli("receiver", "trust", "sender@xfer.test", prints["sender"])

    def cli_stream(
        self,
        source: list[str],
        sink: list[str] | None,
        extra: tuple[str, ...] = (),
        gate: float | None = None,
    ) -> dict[str, Any]:
        """``source | xfer send - [extra]`` and ``xfer receive --stdout | sink``
        (or > /dev/null), each xfer a process of its own: their exit codes,
        stderr and peak RSS (``wait4``), and the sink's output. With
        ``gate``, the source gets a line on its stdin that many seconds after
        the receiver said it was offered the stream."""
        me = [sys.executable, "-m", "xfer_cli"]
        devnull = os.open(os.devnull, os.O_WRONLY)
        receiver = subprocess.Popen(
            [*me, "receive", "--stdout", "--yes"],
            env=self.cli_env("receiver"),
            stdout=subprocess.PIPE if sink else devnull,
            stderr=subprocess.PIPE,
        )
        os.close(devnull)
        consumer = None
        if sink:
            consumer = subprocess.Popen(
                sink, stdin=receiver.stdout, stdout=subprocess.PIPE
            )
            assert receiver.stdout is not None
            receiver.stdout.close()
        assert receiver.stderr is not None
        r_err: list[bytes] = []
        while b"waiting for one offer" not in (line := receiver.stderr.readline()):
            if not line:
                raise RuntimeError(b"".join(r_err).decode(errors="replace"))
            r_err.append(line)
        producer = subprocess.Popen(
            source,
            stdin=subprocess.PIPE if gate is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        sender = subprocess.Popen(
            [*me, "send", "-", "--to", "receiver@xfer.test", *extra],
            env=self.cli_env("sender"),
            stdin=producer.stdout,
            stderr=subprocess.PIPE,
        )
        assert producer.stdout is not None
        producer.stdout.close()
        s_err: list[bytes] = []
        offered = threading.Event()

        def receiver_lines() -> None:
            for line in receiver.stderr or []:
                r_err.append(line)
                if b" offers a stream" in line:
                    offered.set()

        drains = [
            threading.Thread(target=receiver_lines),
            threading.Thread(target=lambda: s_err.extend(sender.stderr or [])),
        ]
        for thread in drains:
            thread.start()
        if gate is not None:
            assert producer.stdin is not None
            if offered.wait(120):
                time.sleep(gate)
            producer.stdin.write(b"go\n")
            producer.stdin.close()
        out = consumer.communicate(timeout=7200)[0] if consumer else b""
        rss = {}
        for name, proc in (("sender", sender), ("receiver", receiver)):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            rss[name] = usage.ru_maxrss / 1024
        producer.wait(60)
        for thread in drains:
            thread.join(30)
        return {
            "sender_rc": sender.returncode,
            "receiver_rc": receiver.returncode,
            "sender_err": b"".join(s_err).decode(errors="replace"),
            "receiver_err": b"".join(r_err).decode(errors="replace"),
            "sender_rss_mib": rss["sender"],
            "receiver_rss_mib": rss["receiver"],
            "out": out,
        }

    def cli_live(self, seconds: float) -> tuple[list[float], str]:
        me = [sys.executable, __file__]
        run = self.cli_stream(
            [*me, "--writer", str(seconds), "10", "--gated"],
            [*me, "--reader"],
            gate=CLI_GATE,
        )
        check_cli(run)
        got = json.loads(run["out"])
        expected = int(seconds * 100)
        if got["bad"] or len(got["latencies_us"]) != expected:
            raise RuntimeError(
                f"CLI: {got['bad']} bad, {len(got['latencies_us'])}/{expected}"
            )
        return got["latencies_us"], transport_of(run["sender_err"])

    def memory(self, size: int) -> dict[str, Any]:
        start = time.perf_counter()
        run = self.cli_stream([sys.executable, __file__, "--source", str(size)], None)
        seconds = time.perf_counter() - start
        check_cli(run)
        said = SHA_RE.findall(run["sender_err"] + run["receiver_err"])
        expected = subprocess.run(
            [sys.executable, __file__, "--hash-generated", str(size)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if said != [expected, expected]:
            raise RuntimeError(f"memory {size}: SHA-256 {said} != {expected}")
        if f"{size} bytes verified" not in run["receiver_err"]:
            raise RuntimeError(f"memory {size}: {run['receiver_err']}")
        return {
            "mib": size // MiB,
            "sender_peak_rss_mib": round(run["sender_rss_mib"], 1),
            "receiver_peak_rss_mib": round(run["receiver_rss_mib"], 1),
            "transport": transport_of(run["sender_err"]),
            "seconds_with_login": round(seconds, 1),
            "sha256_checked": True,
        }


SHA_RE = re.compile(r"SHA-256 ([0-9a-f]{64})")


def check_cli(run: dict[str, Any]) -> None:
    if run["sender_rc"] or run["receiver_rc"]:
        raise RuntimeError(
            f"CLI failed ({run['sender_rc']}, {run['receiver_rc']}):\n"
            f"{run['sender_err']}\n{run['receiver_err']}"
        )


def transport_of(sender_err: str) -> str:
    found = re.search(r"sent stream .*?\(.*?, (.*?), [0-9.]+ MB/s\)", sender_err)
    return found.group(1) if found else "?"


def latency_row(one_way_us: list[float], rtt_us: list[float]) -> dict[str, Any]:
    half = statistics.median(rtt_us) / 2 / 1000
    p50 = percentile(one_way_us, 50) / 1000
    p99 = percentile(one_way_us, 99) / 1000
    return {
        "messages": len(one_way_us),
        "one_way_p50_ms": round(p50, 2),
        "one_way_p99_ms": round(p99, 2),
        "one_way_max_ms": round(max(one_way_us) / 1000, 2),
        "one_way_percentiles_ms": {
            str(q): round(percentile(one_way_us, q) / 1000, 2)
            for q in (1, 10, 25, 50, 75, 90, 95, 99, 99.9)
        },
        "added_p50_ms": round(p50 - half, 2),
        "added_p99_ms": round(p99 - half, 2),
        "added_target_met": p50 - half < TARGET_ADDED_P50_MS
        and p99 - half < TARGET_ADDED_P99_MS,
    }


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cryptography": version("cryptography"),
        "slixmpp": version("slixmpp"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["pipe", "live", "memory"],
        choices=["pipe", "live", "memory"],
    )
    parser.add_argument("--size-mib", type=int, default=256, help="pipe part")
    parser.add_argument("--rounds", type=int, default=5, help="pipe part")
    parser.add_argument("--seconds", type=float, default=30, help="live, per case")
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--flush-ms", type=float, nargs="+", default=[15, 1])
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI live run")
    parser.add_argument(
        "--memory-mib", type=int, nargs="+", default=[64, 1024], help="memory part"
    )
    parser.add_argument("--long", action="store_true", help="memory: also 8 GiB")
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "stream")
    parser.add_argument(
        "--worker", choices=["encrypted", "plain"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--writer", nargs=2, type=float, help=argparse.SUPPRESS)
    parser.add_argument("--gated", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hash-generated", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.worker, args.port))
        return 0
    if args.writer:
        writer_main(*args.writer, gated=args.gated)
        return 0
    if args.reader:
        reader_main()
        return 0
    if args.source is not None:
        source_main(args.source)
        return 0
    if args.hash_generated is not None:
        print(generated_sha256(args.hash_generated))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine_info()}
    params: dict[str, Any] = {"parts": args.parts}
    report["params"] = params
    report["targets"] = {
        "pipe_ratio": TARGET_RATIO,
        "added_p50_ms_direct": TARGET_ADDED_P50_MS,
        "added_p99_ms_direct": TARGET_ADDED_P99_MS,
        "peak_rss_mib": TARGET_RSS_MIB,
    }
    folder = Path(tempfile.mkdtemp(prefix="xfer-bench-", dir=args.dir))
    try:
        with LocalProsody(accounts=dict(ACCOUNTS)) as server:
            bench = Bench(server, folder)
            if "pipe" in args.parts:
                params.update(size_mib=args.size_mib, rounds=args.rounds)
                data = folder / "data.bin"
                sha256 = write_random(data, args.size_mib * MiB)
                report["pipe"] = bench.pipe(data, sha256, args.rounds)
                data.unlink()
            if "live" in args.parts:
                report["live"] = live_part(bench, args, params)
            if "memory" in args.parts:
                sizes = [m * MiB for m in args.memory_mib]
                if args.long:
                    sizes.append(8 << 30)
                params.update(memory_mib=[s // MiB for s in sizes])
                if not (folder / "cli-sender").exists():
                    bench.cli_trust()
                rows = []
                for size in sizes:
                    print(f"memory: {size // MiB} MiB", file=sys.stderr)
                    rows.append(bench.memory(size))
                peak = max(
                    max(r["sender_peak_rss_mib"], r["receiver_peak_rss_mib"])
                    for r in rows
                )
                report["memory"] = {
                    "rows": rows,
                    "largest_peak_rss_mib": peak,
                    "target": f"< {TARGET_RSS_MIB:g} MiB both sides",
                    "target_met": peak < TARGET_RSS_MIB,
                }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started
    params["seconds"] = round(elapsed, 1)
    # The machine may be shared: its load at the end beside the start's.
    report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    report["orchestrator_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print_tables(report)
    write_report(args.json, "stream", report, lead=f"\n{elapsed:.0f} s; ")
    return 0


def live_part(
    bench: Bench, args: argparse.Namespace, params: dict[str, Any]
) -> dict[str, Any]:
    rounds = args.latency_rounds
    seconds = args.seconds / rounds
    params.update(
        live_seconds_per_case=args.seconds,
        latency_rounds=rounds,
        flush_ms=args.flush_ms,
        message_bytes=MESSAGE,
        interval_ms=10,
        kinds=args.kinds,
        cli=not args.no_cli,
    )
    one_way: dict[str, list[float]] = {}
    rtts: dict[str, list[float]] = {k: [] for k in args.kinds}
    cli: list[float] = []
    cli_transport = set()
    for r in range(rounds):
        for kind in args.kinds:
            print(f"live {r + 1}/{rounds}: {kind} raw echo", file=sys.stderr)
            rtts[kind] += bench.rtt(kind, int(seconds * 100))
            for flush in args.flush_ms:
                print(
                    f"live {r + 1}/{rounds}: {kind} flush {flush:g} ms", file=sys.stderr
                )
                got, _ = bench.live(kind, seconds, flush)
                one_way.setdefault(f"{kind} flush {flush:g} ms", []).extend(got)
        if not args.no_cli:
            if not (bench.folder / "cli-sender").exists():
                bench.cli_trust()
            print(f"live {r + 1}/{rounds}: CLI", file=sys.stderr)
            got, transport = bench.cli_live(seconds)
            cli += got
            cli_transport.add(transport)
    rows: dict[str, Any] = {}
    for kind in args.kinds:
        rtt = rtts[kind]
        rows[f"{kind} raw echo"] = {
            "messages": len(rtt),
            "rtt_p50_ms": round(percentile(rtt, 50) / 1000, 2),
            "rtt_p99_ms": round(percentile(rtt, 99) / 1000, 2),
            "half_rtt_p50_ms": round(statistics.median(rtt) / 2000, 2),
        }
        for flush in args.flush_ms:
            name = f"{kind} flush {flush:g} ms"
            rows[name] = latency_row(one_way[name], rtt)
    if cli:
        # The CLI's own transport on loopback (direct SOCKS5, see "transport").
        direct = rtts.get("socks5-direct") or next(iter(rtts.values()))
        row = latency_row(cli, direct)
        row["transport"] = sorted(cli_transport)
        rows[
            "CLI writer | xfer send - ... xfer receive --stdout | reader, flush 15 ms"
        ] = row
    return {
        "rows": rows,
        "added": "one-way percentile (writer's write -> the verified piece "
        "holding the message's last byte yielded to the receiver) minus half "
        "the median round trip of the raw transport (same transport, plain "
        "bytestream echo, same run)",
    }


def print_tables(report: dict[str, Any]) -> None:
    if "pipe" in report:
        p = report["pipe"]
        print(
            f"\npipe throughput, {p['mib']} MiB, {p['transport']}, medians of "
            f"{report['params']['rounds']} rounds (MB = 10**6 bytes)"
        )
        print(f"{'stream MB/s':>12} {'file MB/s':>10} {'ratio':>6}  target")
        print(
            f"{p['stream_mb_s']:>12} {p['file_mb_s']:>10} {p['ratio']:>6.2f}  "
            f"{p['target']} {'met' if p['target_met'] else 'MISSED'}"
        )
        c = p["cpu_pct_median"]
        print(
            "CPU (100% = one core) sender/receiver: stream "
            f"{c['stream']['sender_cpu_pct']}/{c['stream']['receiver_cpu_pct']}, "
            f"file {c['file']['sender_cpu_pct']}/{c['file']['receiver_cpu_pct']}"
        )
        print(
            "CPU s per GiB sender/receiver: stream "
            f"{c['stream']['sender_cpu_s_per_gib']}/"
            f"{c['stream']['receiver_cpu_s_per_gib']}, file "
            f"{c['file']['sender_cpu_s_per_gib']}/"
            f"{c['file']['receiver_cpu_s_per_gib']}"
        )
        print(f"ratios per round: {p['ratios']}")
    if "live" in report:
        print(
            "\nlive latency, 200-byte message every 10 ms; ms; added = one-way "
            "minus half the raw echo's median round trip"
        )
        head = (
            f"{'case':44} {'n':>5} {'p50':>7} {'p99':>7} {'max':>7} "
            f"{'add p50':>8} {'add p99':>8}"
        )
        print(head)
        print("-" * len(head))
        for name, row in report["live"]["rows"].items():
            if "rtt_p50_ms" in row:
                print(
                    f"{name[:44]:44} {row['messages']:>5} {row['rtt_p50_ms']:>7} "
                    f"{row['rtt_p99_ms']:>7} {'(round trip)':>7}"
                )
            else:
                print(
                    f"{name[:44]:44} {row['messages']:>5} {row['one_way_p50_ms']:>7} "
                    f"{row['one_way_p99_ms']:>7} {row['one_way_max_ms']:>7} "
                    f"{row['added_p50_ms']:>8} {row['added_p99_ms']:>8}"
                )
    if "memory" in report:
        m = report["memory"]
        print("\nmemory: xfer send - / xfer receive --stdout > /dev/null, peak RSS MiB")
        print(f"{'MiB':>6} {'sender':>7} {'receiver':>9} {'transport':>14} {'s':>6}")
        for row in m["rows"]:
            print(
                f"{row['mib']:>6} {row['sender_peak_rss_mib']:>7} "
                f"{row['receiver_peak_rss_mib']:>9} {row['transport']:>14} "
                f"{row['seconds_with_login']:>6}"
            )
        print(f"target {m['target']}: {'met' if m['target_met'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
