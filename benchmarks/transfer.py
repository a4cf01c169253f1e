"""End-to-end encrypted file transfer through a real Prosody, beside the bare transports.

    python benchmarks/transfer.py [--mib-direct 256] [--mib-proxy 64] [--mib-ibb 32]
                                  [--rounds 5] [--latency-rounds 5] [--dir DIR] [--json PATH]

Starts a throw-away Prosody on loopback; sender and receiver are always two
separate processes (this script with ``--worker``), driven by this one over
pipes, so both cores are used as by two real clients. In the same run:

* throughput, for each transport (SOCKS5 direct, SOCKS5 through the server's
  proxy, IBB after transport-replace; forced as in
  ``tests/integration/test_transfer.py``): ``xfer.connect`` clients that
  trust each other send a file (OTR already secure: a small file went
  first), timed from the ``send_file`` call to its return, by which time the
  receiver has verified, fsynced and renamed it. Beside it, the reference: the
  plain ``xfer_socks5`` / ``xfer_ibb`` plugins moving as many random bytes
  (IBB: block size 32767 and the default window, as a transfer uses), timed
  from ``open`` to the receiver's last byte; the ratio is encrypted / plain.
  Two more references bound what a transfer can reach here: the disk
  (writing and fsyncing a file as large into the same directory, as the
  receiver must) and the crypto (seal, open and SHA-256 on one core each,
  combined into the limit of a transfer on two cores). Every case runs in
  fresh processes, so each reports its own peak RSS (``getrusage``), and
  the CPU of sender, receiver and Prosody (100 % = one core).
* set-up latency of a small file (1 KiB): from the ``send_file`` call to the
  receiver's first progress callback (the sealed stream reached it; a file
  this small is one chunk, whose plaintext the envelope releases only once
  the stream ends), and to ``send_file``'s return; once with OTR already
  secure and once including the AKE (fresh identities, newly connected
  clients). Timestamps are ``perf_counter``, which is system-wide on Linux
  (CLOCK_MONOTONIC), so they compare across the two processes.

Rounds interleave the cases; the table shows medians (RSS: the largest).
MB = 10**6 bytes. It prints a table and writes JSON (default
``benchmarks/results/transfer.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import WorkerProcess, add_json_option, emit, write_report

from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing

if TYPE_CHECKING:
    from collections.abc import Iterator

MiB = 1 << 20
PIECE = 4 * MiB  # the pieces of the crypto reference (the sender seals 1 MiB ones)
IBB_BLOCK = 32767  # the block size a Jingle IBB transport uses
ACCOUNTS = {"sender": "sender-pw", "receiver": "receiver-pw"}
KINDS = ("socks5-direct", "socks5-proxy", "ibb")
TIMEOUT = 300.0
TARGET_DIRECT_MB_S = 400
TARGET_RATIO = 0.9
TARGET_SECURE_MS = 300
TARGET_AKE_MS = 500
#: How long a sender waits for the receiver's verdict (default 300 s). Lower, so
#: that a verdict the sender misses (its data-phase watcher can swallow the
#: receiver's session-terminate) costs a dropped sample, not five minutes.
OFFER_TIMEOUT = 15.0

# -- the worker processes (one client each, driven over stdin/stdout) ------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Marks:
    """A progress callback that notes when it was first called, and the last two
    times."""

    def __init__(self) -> None:
        self.first = self.previous = self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        del done, total
        now = time.perf_counter()
        self.first = self.first or now
        self.previous, self.last = self.last or now, now


class EncryptedWorker:
    """An ``xfer.connect`` client: sends files, or accepts every offer."""

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

    async def op_send(self, peer: str, path: str) -> dict[str, Any]:
        first: list[float] = []

        def progress(done: int, total: int | None) -> None:
            del total
            if not first and done:
                first.append(time.perf_counter())

        from xfer.errors import TransferTimeout

        cpu0 = _cpu()
        start = time.perf_counter()
        try:
            result = await self.client.send_file(peer, path, progress=progress)
        except TransferTimeout as exc:  # see OFFER_TIMEOUT
            return {"start": start, "timeout": str(exc)}
        end = time.perf_counter()
        return {
            "start": start,
            "end": end,
            "first_progress": first[0] if first else end,
            "cpu": _cpu() - cpu0,
            "transport": result.transport,
            "size": result.size,
            "sealed_size": result.sealed_size,
            "setup_seconds": result.setup_seconds,
        }

    async def _accept(self, inbox: Path) -> None:
        while True:
            offer = await self.client.next_offer()
            arrived, cpu0 = time.perf_counter(), _cpu()
            marks = _Marks()
            try:
                path = await offer.accept(inbox, progress=marks)
            except Exception:
                emit({"event": "received", "error": traceback.format_exc()})
                continue
            done = time.perf_counter()
            size = path.stat().st_size
            await asyncio.to_thread(path.unlink)
            emit(
                {
                    "event": "received",
                    "offer": arrived,
                    "first": marks.first,
                    # The last two progress calls: after the last piece read,
                    # and after finalize, fsync and rename.
                    "commit_start": marks.previous,
                    "done": done,
                    "bytes": size,
                    "cpu": _cpu() - cpu0,
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


class PlainWorker:
    """The bare bytestream plugins, no encryption: the reference."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None
        self.tasks: list[asyncio.Task[None]] = []

    async def op_connect(
        self, user: str, resource: str, receive: bool = False
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
        # The default window, as the transfer's IBB uses.
        self.client.register_plugin(
            "xfer_ibb", {"authorize": lambda *_: True}, module=ibb_module
        )
        self.client.register_plugin(
            "xfer_socks5", {"authorize": lambda *_: True}, module=socks5_module
        )
        if receive:
            for name in ("xfer_ibb", "xfer_socks5"):
                self.tasks.append(asyncio.ensure_future(self._drain(name)))
        return {"jid": str(self.client.boundjid.full)}

    async def _drain(self, plugin: str) -> None:
        while True:
            stream = await self.client.plugin[plugin].accept()
            cpu0, n = _cpu(), 0
            try:
                while chunk := await stream.read(PIECE):
                    n += len(chunk)
                end = time.perf_counter()
                if plugin == "xfer_socks5":
                    await stream.close()
            except Exception:
                emit({"event": "received", "error": traceback.format_exc()})
                continue
            emit({"event": "received", "done": end, "bytes": n, "cpu": _cpu() - cpu0})

    async def op_send(self, peer: str, kind: str, size: int) -> dict[str, Any]:
        block = memoryview(os.urandom(PIECE))
        cpu0 = _cpu()
        start = time.perf_counter()
        if kind == "ibb":
            stream = await self.client.plugin["xfer_ibb"].open(
                peer, block_size=IBB_BLOCK
            )
        else:
            direct = kind == "socks5-direct"
            stream = await self.client.plugin["xfer_socks5"].open(
                peer, direct=direct, proxy=not direct
            )
        for i in range(0, size, PIECE):
            await stream.write(block[: min(PIECE, size - i)])
        await stream.close()
        end = time.perf_counter()
        return {"start": start, "end": end, "cpu": _cpu() - cpu0}

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
            usage = resource.getrusage(resource.RUSAGE_SELF)
            emit({"reply": {"peak_rss_mib": usage.ru_maxrss / 1024}})
            return
        try:
            emit({"reply": await getattr(state, f"op_{op}")(**request)})
        except Exception:
            emit({"error": traceback.format_exc()})


# -- the orchestrator -------------------------------------------------------------


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
        sender.kill()
        receiver.kill()


def transport_config(kind: str) -> dict[str, object]:
    """Force a transport, as the integration tests do."""
    return forcing(kind)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for i in range(0, size, PIECE):
            f.write(os.urandom(min(PIECE, size - i)))
        f.flush()
        os.fsync(f.fileno())  # no write-back of it later, during a transfer


def disk_speed(folder: Path, size: int) -> float:
    """MB/s of writing ``size`` bytes and fsyncing them, as a receiver must."""
    path = folder / "disk-reference.bin"
    block = os.urandom(PIECE)
    start = time.perf_counter()
    with path.open("wb") as f:
        for i in range(0, size, PIECE):
            f.write(block[: min(PIECE, size - i)])
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return size / seconds / 1e6


def crypto_speeds(size: int) -> dict[str, float]:
    """MB/s of the work a transfer does per byte, each on one core: sealing and
    opening (the suite a transfer picks here, ``fastest_suite``, the default
    chunk size, 4 MiB pieces, no worker threads) and SHA-256 (the sender
    hashes the file as it seals it, the receiver the plaintext it opens)."""
    import hashlib

    from xfer.envelope import Opener, Sealer
    from xfer.envelope.choice import fastest_suite

    suite = fastest_suite()  # as the transfers measured beside it seal
    data = memoryview(os.urandom(size))
    sealer = Sealer(bytes(32), suite=suite)
    buf = bytearray(sealer.output_bound(PIECE))
    start = time.perf_counter()
    for i in range(0, size, PIECE):
        sealer.update_into(data[i : i + PIECE], buf)
    sealer.finalize()
    seal = size / (time.perf_counter() - start) / 1e6
    again = Sealer(bytes(32), suite=suite)
    sealed = memoryview(again.update(data) + again.finalize())
    opener = Opener(bytes(32))
    buf = bytearray(2 * PIECE)
    start = time.perf_counter()
    for i in range(0, len(sealed), PIECE):
        opener.update_into(sealed[i : i + PIECE], buf)
    opener.finalize()
    open_ = size / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    sha = size / (time.perf_counter() - start) / 1e6
    # One pass on each side: sealing and the sender's hash, opening and the
    # receiver's hash, all sharing both cores.
    limit = 1 / ((1 / seal + 1 / open_ + 2 / sha) / 2)
    return {"seal": seal, "open": open_, "sha256": sha, "two_core_limit": limit}


def crypto_reference(mib: int) -> dict[str, float]:
    """:func:`crypto_speeds` in a process of its own. This one must stay small:
    a child inherits its parent's peak RSS as the floor of its own
    ``ru_maxrss`` (Linux carries it over the fork and exec), so big buffers
    here would show up as the workers' peak."""
    out = subprocess.run(
        [sys.executable, __file__, "--crypto-mib", str(mib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


class Bench:
    def __init__(self, server: LocalProsody, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.sessions = 0
        #: transfers the receiver stored but whose sender never saw it end
        self.missed: list[dict[str, Any]] = []
        assert server._process is not None
        self.prosody_pid = server._process.pid

    def connect(
        self, sender: Worker, receiver: Worker, kind: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Newly connected clients with fresh identities that trust each other."""
        self.sessions += 1
        n = self.sessions
        config = {**transport_config(kind), "offer_timeout": OFFER_TIMEOUT}
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

    def send(
        self, sender: Worker, receiver: Worker, peer: str, path: Path, kind: str
    ) -> dict[str, Any] | None:
        """One transfer's figures; None if the sender missed the verdict."""
        p0 = cpu_seconds(self.prosody_pid)
        s = sender.call("send", peer=peer, path=str(path))
        prosody = cpu_seconds(self.prosody_pid) - p0
        r = receiver.event()
        if "timeout" in s:
            if r["bytes"] != path.stat().st_size:
                raise RuntimeError(f"{kind}: the sender timed out: {s['timeout']}")
            self.missed.append(
                {
                    "transport": kind,
                    "bytes": r["bytes"],
                    "receiver_done_after_ms": round(1000 * (r["done"] - s["start"])),
                    "sender": s["timeout"],
                }
            )
            print(
                f"  {kind}: the receiver stored the file, but the sender never saw "
                f"the session end: {s['timeout']}",
                file=sys.stderr,
            )
            return None
        if s["transport"] != kind:
            raise RuntimeError(f"wanted {kind}, the transfer used {s['transport']}")
        if r["bytes"] != s["size"] or r["bytes"] != path.stat().st_size:
            raise RuntimeError(f"{kind}: {r['bytes']} bytes arrived of {s['size']}")
        wall = s["end"] - s["start"]
        return {
            "mb_s": s["size"] / wall / 1e6,
            "total_ms": 1000 * wall,
            "offer_ms": 1000 * (r["offer"] - s["start"]),
            "first_data_ms": 1000 * (r["first"] - s["start"]),
            "setup_ms": 1000 * s["setup_seconds"],
            # send_file call -> its first piece sealed: the file id, OTR offer,
            # Jingle and transport negotiation.
            "to_data_ms": 1000 * (s["first_progress"] - s["start"]),
            # the receiver's last piece read -> finalized, fsynced, renamed
            "commit_ms": 1000 * (r["done"] - r["commit_start"]),
            # between the two: the data phase alone
            "data_mb_s": s["size"]
            / max(r["commit_start"] - s["first_progress"], 1e-6)
            / 1e6,
            "sender_cpu_pct": 100 * s["cpu"] / wall,
            "receiver_cpu_pct": 100 * r["cpu"] / wall,
            "prosody_cpu_pct": 100 * prosody / wall,
        }

    def latency(
        self, sender: Worker, receiver: Worker, kind: str, small: Path, secure: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One session: the first file (with the AKE), then ``secure`` more."""
        _, b = self.connect(sender, receiver, kind)
        sends = [
            self.send(sender, receiver, b["jid"], small, kind)
            for _ in range(1 + secure)
        ]
        sender.call("close")
        receiver.call("close")
        ake = [x for x in sends[:1] if x is not None]
        return ake, [x for x in sends[1:] if x is not None]

    def encrypted(self, kind: str, big: Path) -> dict[str, Any]:
        port = self.server.c2s_port
        with pair("encrypted", port) as (sender, receiver):
            _, b = self.connect(sender, receiver, kind)
            small = self.folder / "small.bin"
            self.send(sender, receiver, b["jid"], small, kind)  # the AKE
            row = self.send(sender, receiver, b["jid"], big, kind)
            if row is None:  # once more
                row = self.send(sender, receiver, b["jid"], big, kind)
            if row is None:
                raise RuntimeError(f"{kind}: the sender missed the verdict twice")
            row["sender_peak_rss_mib"] = sender.finish()
            row["receiver_peak_rss_mib"] = receiver.finish()
        return row

    def plain(self, kind: str, size: int) -> dict[str, Any]:
        self.sessions += 1
        n = self.sessions
        with pair("plain", self.server.c2s_port) as (sender, receiver):
            sender.call("connect", user="sender", resource=f"s{n}")
            b = receiver.call(
                "connect", user="receiver", resource=f"r{n}", receive=True
            )
            p0 = cpu_seconds(self.prosody_pid)
            s = sender.call("send", peer=b["jid"], kind=kind, size=size)
            r = receiver.event()
            prosody = cpu_seconds(self.prosody_pid) - p0
            if r["bytes"] != size:
                raise RuntimeError(f"plain {kind}: {r['bytes']} bytes of {size}")
            wall = r["done"] - s["start"]
            return {
                "mb_s": size / wall / 1e6,
                "sender_cpu_pct": 100 * s["cpu"] / wall,
                "receiver_cpu_pct": 100 * r["cpu"] / wall,
                "prosody_cpu_pct": 100 * prosody / wall,
                "sender_peak_rss_mib": sender.finish(),
                "receiver_peak_rss_mib": receiver.finish(),
            }


def median_row(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        pick = max if "rss" in key else statistics.median
        out[key] = round(pick(values), 1)
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib-direct", type=int, default=256)
    parser.add_argument("--mib-proxy", type=int, default=64)
    parser.add_argument("--mib-ibb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument(
        "--secure-sends", type=int, default=2, help="small files after the AKE's"
    )
    parser.add_argument("--latency-kib", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "transfer")
    parser.add_argument(
        "--worker", choices=["encrypted", "plain"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--crypto-mib", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.worker, args.port))
        return 0
    if args.crypto_mib:
        print(json.dumps(crypto_speeds(args.crypto_mib * MiB)))
        return 0

    mib = {
        "socks5-direct": args.mib_direct,
        "socks5-proxy": args.mib_proxy,
        "ibb": args.mib_ibb,
    }
    started = time.perf_counter()
    ake: dict[str, list[dict[str, Any]]] = {k: [] for k in args.kinds}
    secure: dict[str, list[dict[str, Any]]] = {k: [] for k in args.kinds}
    enc: dict[str, list[dict[str, Any]]] = {k: [] for k in args.kinds}
    plain: dict[str, list[dict[str, Any]]] = {k: [] for k in args.kinds}
    disk: dict[int, list[float]] = {}
    crypto: dict[str, list[float]] = {}
    folder = Path(tempfile.mkdtemp(prefix="xfer-bench-", dir=args.dir))
    try:
        with LocalProsody(accounts=dict(ACCOUNTS)) as server:
            bench = Bench(server, folder)
            small = folder / "small.bin"
            write_random(small, args.latency_kib * 1024)
            files = {}
            for kind in args.kinds:
                files[kind] = folder / f"file-{mib[kind]}mib.bin"
                if not files[kind].exists():
                    write_random(files[kind], mib[kind] * MiB)

            print("latency: small files, fresh clients per round", file=sys.stderr)
            with pair("encrypted", server.c2s_port) as (sender, receiver):
                for r in range(args.latency_rounds):
                    for kind in args.kinds:
                        print(
                            f"latency {r + 1}/{args.latency_rounds}: {kind}",
                            file=sys.stderr,
                        )
                        first, rest = bench.latency(
                            sender, receiver, kind, small, args.secure_sends
                        )
                        ake[kind] += first
                        secure[kind] += rest
                sender.finish()
                receiver.finish()

            for r in range(args.rounds):
                for kind in args.kinds:
                    print(f"round {r + 1}/{args.rounds}: {kind}", file=sys.stderr)
                    enc[kind].append(bench.encrypted(kind, files[kind]))
                    plain[kind].append(bench.plain(kind, mib[kind] * MiB))
                for size in sorted({mib[k] for k in args.kinds}):
                    disk.setdefault(size, []).append(disk_speed(folder, size * MiB))
                for name, value in crypto_reference(64).items():
                    crypto.setdefault(name, []).append(value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started

    from xfer.envelope.choice import fastest_suite

    suite_label = fastest_suite().label  # the suite of the transfers and limit
    throughput = {}
    for kind in args.kinds:
        e, p = median_row(enc[kind]), median_row(plain[kind])
        disk_mb_s = statistics.median(disk[mib[kind]])
        ratio = statistics.median(
            a["mb_s"] / b["mb_s"] for a, b in zip(enc[kind], plain[kind], strict=True)
        )
        if kind == "socks5-direct":
            target = f">= {TARGET_DIRECT_MB_S} MB/s encrypted"
            met = e["mb_s"] >= TARGET_DIRECT_MB_S
        else:
            target = f"ratio >= {TARGET_RATIO}"
            met = ratio >= TARGET_RATIO
        throughput[kind] = {
            "mib": mib[kind],
            "encrypted_mb_s": e["mb_s"],
            "plain_mb_s": p["mb_s"],
            "ratio": round(ratio, 3),
            "disk_write_fsync_mb_s": round(disk_mb_s, 1),
            "target": target,
            "target_met": met,
            "encrypted": e,
            "plain": p,
        }
    references = {
        f"{name}_mb_s": round(statistics.median(values), 1)
        for name, values in crypto.items()
    }
    # Per round, the encrypted direct transfer against the limit measured
    # right after it: how much of the crypto's two-core limit it reaches.
    of_limit = (
        round(
            statistics.median(
                row["mb_s"] / limit
                for row, limit in zip(
                    enc["socks5-direct"], crypto["two_core_limit"], strict=True
                )
            ),
            3,
        )
        if "socks5-direct" in enc
        else None
    )
    latency = {}
    for kind in args.kinds:
        s, a = median_row(secure[kind]), median_row(ake[kind])
        latency[kind] = {
            "secure": {k: v for k, v in s.items() if k.endswith("_ms")},
            "with_ake": {k: v for k, v in a.items() if k.endswith("_ms")},
            "secure_n": len(secure[kind]),
            "with_ake_n": len(ake[kind]),
            "secure_target_met": s["first_data_ms"] < TARGET_SECURE_MS,
            "ake_target_met": a["first_data_ms"] < TARGET_AKE_MS,
        }

    print(
        f"\nthroughput: medians of {args.rounds} rounds; MB = 10**6 bytes; "
        "ratio = encrypted / plain (per round, median)"
    )
    head = (
        f"{'transport':14} {'MiB':>4} {'encrypted':>9} {'plain':>7} {'ratio':>6} "
        f"{'disk':>6}  {'target':26} {'':6}"
    )
    print(head)
    print("-" * len(head))
    for kind, row in throughput.items():
        print(
            f"{kind:14} {row['mib']:>4} {row['encrypted_mb_s']:>9} "
            f"{row['plain_mb_s']:>7} {row['ratio']:>6.2f} "
            f"{row['disk_write_fsync_mb_s']:>6}  {row['target']:26} "
            f"{verdict(row['target_met'])}"
        )
    print(
        "disk = writing and fsyncing a file as large in the same directory "
        "(the receiver fsyncs before the rename)"
    )
    print(
        f"crypto now, one core each: seal {references['seal_mb_s']}, open "
        f"{references['open_mb_s']}, SHA-256 {references['sha256_mb_s']} MB/s; "
        f"a transfer's two-core limit\n(seal + open + two SHA-256 "
        f"on both cores; no network, no disk): {references['two_core_limit_mb_s']} "
        f"MB/s ({suite_label})"
        + (
            f"; encrypted direct / that limit (per round, median): {of_limit:.2f}"
            if of_limit is not None
            else ""
        )
    )
    print(
        "\nwhere the time goes (encrypted; ms) and CPU (100% = one core), "
        "peak RSS (MiB, largest of the rounds)"
    )
    head = (
        f"{'transport':14} {'to data':>8} {'data MB/s':>9} {'commit':>7} "
        f"{'send%':>6} {'recv%':>6} "
        f"{'pros%':>6} {'RSS s/r':>11} | {'plain:':6} {'send%':>6} {'recv%':>6} "
        f"{'pros%':>6} {'RSS s/r':>11}"
    )
    print(head)
    print("-" * len(head))
    for kind, row in throughput.items():
        e, p = row["encrypted"], row["plain"]
        print(
            f"{kind:14} {e['to_data_ms']:>8} {e['data_mb_s']:>9} {e['commit_ms']:>7} "
            f"{e['sender_cpu_pct']:>6} {e['receiver_cpu_pct']:>6} "
            f"{e['prosody_cpu_pct']:>6} "
            f"{e['sender_peak_rss_mib']:>5}/{e['receiver_peak_rss_mib']:<5} | "
            f"{'':6} {p['sender_cpu_pct']:>6} {p['receiver_cpu_pct']:>6} "
            f"{p['prosody_cpu_pct']:>6} "
            f"{p['sender_peak_rss_mib']:>5}/{p['receiver_peak_rss_mib']:<5}"
        )
    print(
        "to data = send_file call -> its first piece sealed (the file id, "
        "OTR offer, Jingle, transport);\ndata MB/s = from then to the receiver's "
        "last piece read; commit = from then to finalized, fsynced, renamed"
    )
    print(
        f"\nset-up latency, {args.latency_kib} KiB file, ms from the send_file call; "
        f"medians over {args.latency_rounds} sessions per transport\nof newly "
        f"connected clients: their first file (with the AKE), and the "
        f"{args.secure_sends} after it (secure)"
    )
    head = (
        f"{'transport':14} {'':8} {'offer':>6} {'1st data':>9} {'setup':>6} "
        f"{'total':>6}  {'target':13}"
    )
    print(head)
    print("-" * len(head))
    for kind, row in latency.items():
        for label, key, limit, met in (
            ("secure", "secure", TARGET_SECURE_MS, row["secure_target_met"]),
            ("with AKE", "with_ake", TARGET_AKE_MS, row["ake_target_met"]),
        ):
            x = row[key]
            print(
                f"{kind:14} {label:8} {x['offer_ms']:>6} {x['first_data_ms']:>9} "
                f"{x['setup_ms']:>6} {x['total_ms']:>6}  "
                f"{'< ' + str(limit) + ' ms':13} {verdict(met)}"
            )
    print(
        "offer = the receiver's next_offer returns; 1st data = its first progress "
        "callback (sealed bytes arrived);\nsetup = the sender's transport "
        "negotiation (SendResult.setup_seconds); total = send_file returns "
        "(verified, fsynced, renamed)"
    )

    report = {
        "machine": machine_info(),
        "params": {
            "mib": {k: mib[k] for k in args.kinds},
            "rounds": args.rounds,
            "latency_rounds": args.latency_rounds,
            "secure_sends_per_round": args.secure_sends,
            "latency_bytes": args.latency_kib * 1024,
            "piece_bytes": PIECE,
            "ibb_block_size": IBB_BLOCK,
            "dir": str(args.dir or tempfile.gettempdir()),
            "seconds": round(elapsed, 1),
        },
        "targets": {
            "socks5_direct_encrypted_mb_s": TARGET_DIRECT_MB_S,
            "ratio_ibb_and_proxy": TARGET_RATIO,
            "latency_secure_ms": TARGET_SECURE_MS,
            "latency_with_ake_ms": TARGET_AKE_MS,
        },
        "throughput": throughput,
        "crypto_reference": {**references, "suite": suite_label},
        "direct_of_two_core_limit": of_limit,
        "latency": latency,
        # the floor of every worker's peak RSS (see crypto_reference)
        "orchestrator_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "sender_missed_verdict": bench.missed,
        "samples": {
            "encrypted": enc,
            "plain": plain,
            "disk_write_fsync_mb_s": {str(k): v for k, v in disk.items()},
            "crypto_mb_s": crypto,
            "latency_secure": secure,
            "latency_with_ake": ake,
        },
    }
    transfers = sum(len(v) for v in (*enc.values(), *secure.values(), *ake.values()))
    if bench.missed:
        print(
            f"\n{len(bench.missed)} transfer(s) the receiver stored but whose sender "
            f"timed out after {OFFER_TIMEOUT:g} s waiting for the session to end "
            f"(besides {transfers} measured); dropped from the figures"
        )
    write_report(args.json, "transfer", report, lead=f"\n{elapsed:.0f} s; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
