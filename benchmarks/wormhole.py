"""xfer beside magic-wormhole: both command lines, as a user runs them, in one run.

    python benchmarks/wormhole.py [--mib 256] [--rounds 5] [--quick]
                                  [--wormhole-venv DIR] [--dir DIR] [--json PATH]

magic-wormhole gets its own virtual environment (``_wormhole_env.py``: pinned
versions, cached in ``--wormhole-venv``, by default
``~/.cache/xfer-bench/wormhole-venv``), its mailbox server and transit relay
on loopback; xfer a throw-away Prosody on loopback (``LocalProsody``, as in
``transfer.py``) with two accounts that trust each other (``xfer keys``,
``xfer trust``). Every transfer is two fresh processes: the receiver
(``xfer receive --once --yes`` / ``wormhole receive --accept-file CODE``) is
started first and left until it is waiting (its own "ready" line, then idle),
then the sender (``xfer send FILE --to JID`` / ``wormhole send --code CODE
FILE``); a transfer's time runs from the sender's start to both processes
having exited, and the received file's SHA-256 must equal the sent one's.

Two paths for each tool:

* direct: a TCP connection between the peers on loopback: xfer's SOCKS5
  direct candidate (the CLI as installed) and wormhole's direct hints (its
  CLI with the hints it offers limited to loopback addresses; see
  ``_wormhole_env.LOOPBACK_WORMHOLE``);
* relay: the bytes go through a server: xfer through Prosody's proxy65
  (the CLI has no option for that, so it runs with the same ``xfer_transfer``
  settings the integration tests use, ``xfer.testing.transports.forcing``,
  put into ``xfer.connect`` by a short launcher: its direct candidates are
  refused, as behind a NAT) and wormhole through its transit relay
  (``--no-listen`` on both sides: no direct hints).

Each is timed with a ``--mib`` file (throughput, MB = 10**6 bytes) and a 1 KiB
file (latency: start-up, log-in, key agreement and set-up). Each process runs
under ``/usr/bin/time``, which gives its CPU (user + system) and peak RSS;
CPU per GiB is net of start-up (the 1 KiB transfer's CPU is subtracted);
beside it, the CPU of the servers (Prosody; wormhole's mailbox server and
transit relay), read from ``/proc`` around each transfer. The
tools alternate which goes first, case by case and round by round; the table
shows medians and the ratios xfer / wormhole. ``--quick`` (4 MiB, one round)
checks that everything works. xfer's packages are byte-compiled first
(``_common.compile_xfer``), as an installation by pip is (wormhole's is);
otherwise a development checkout run with ``PYTHONDONTWRITEBYTECODE``
compiles them at every start. It prints a table and writes JSON (default
``benchmarks/results/wormhole.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import _wormhole_env
from _common import add_json_option, compile_xfer, write_report
from transfer import ACCOUNTS, MiB, cpu_seconds, machine_info, write_random

from xfer.testing.prosody import LocalProsody
from xfer.testing.transports import forcing

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TIME = "/usr/bin/time"
GiB = 1 << 30
SMALL = 1024
MODES = ("direct", "relay")
TIMEOUT = 600.0  # one transfer, at most
READY_TIMEOUT = 60.0
RETRIES = 2
IDLE = 0.3  # the receiver is waiting once its CPU time stands still this long
#: CPU flags that matter here: AES-NI and SHA extensions (xfer's AES-CTR,
#: HMAC-SHA-256 and SHA-256), the vector units (wormhole's XSalsa20-Poly1305
#: in libsodium).
FLAGS = ("aes", "vaes", "pclmulqdq", "sha_ni", "avx2", "avx512f", "ssse3")

#: The xfer CLI with ``xfer_transfer`` settings added to every
#: ``xfer.connect`` (a JSON object, the first argument): the same program
#: otherwise, for the relay case, which its options cannot force.
FORCED_XFER = """\
import json, sys
import xfer
settings = json.loads(sys.argv.pop(1))
connect = xfer.connect
async def forced(*args, **kwargs):
    return await connect(*args, **{**kwargs, **settings})
xfer.connect = forced
from xfer_cli.main import cli
sys.argv[0] = "xfer"
sys.exit(cli())
"""


# -- one process, timed --------------------------------------------------------


class Timed:
    """A command under ``/usr/bin/time`` in its own process group, its output
    in files; ``ended`` is set (``perf_counter``) once it has exited."""

    def __init__(
        self, name: str, argv: Sequence[str], env: dict[str, str], folder: Path
    ) -> None:
        self.name = name
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        self.usage = folder / f"{name}.usage"
        self.ended: float | None = None
        self._exited = threading.Event()
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                [TIME, "-o", str(self.usage), "-f", "%e %U %S %M", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        self.process.wait()
        self.ended = time.perf_counter()
        self._exited.set()

    def join(self, timeout: float) -> None:
        if not self._exited.wait(timeout):
            raise RuntimeError(f"{self.name}: still running after {timeout:g} s")

    def running(self) -> bool:
        return not self._exited.is_set()

    def cpu(self) -> float:
        """CPU seconds of the command so far (not of ``time``); 0 before it
        has been started."""
        pid = self.process.pid
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return cpu_seconds(int(children[0]))
        return 0.0

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(
            errors="replace"
        )

    def result(self) -> tuple[float, float, float]:
        """(CPU seconds, of which in the kernel, peak RSS in MiB) of the
        command, once it has exited with 0."""
        if self.process.returncode != 0:
            tail = "\n".join(self.text().strip().splitlines()[-20:])
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{tail}"
            )
        _, user, system, rss_kib = self.usage.read_text().split()[-4:]
        return float(user) + float(system), float(system), int(rss_kib) / 1024

    def kill(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.join(30)


# -- the two tools ---------------------------------------------------------------


class Tool(Protocol):
    name: str

    def receiver(self, mode: str, inbox: Path, n: int) -> list[str]: ...

    def ready(self, receiver: Timed) -> bool: ...

    def sender(self, mode: str, path: Path, n: int) -> list[str]: ...

    def env(self, role: str) -> dict[str, str]: ...

    def check(self, mode: str, sender: Timed, receiver: Timed) -> dict[str, Any]:
        """Figures from the tool's own output; raises if it took the wrong path."""
        ...

    def startup(self) -> list[str]:
        """The command that only starts the program (``--version``)."""
        ...

    def server_cpu(self) -> float:
        """CPU seconds of its servers so far."""
        ...


class XferCLI:
    """``xfer send`` and ``xfer receive`` on the local Prosody."""

    name = "xfer"

    def __init__(self, server: LocalProsody, folder: Path) -> None:
        self.domain = server.domain
        assert server._process is not None
        self.prosody_pid = server._process.pid
        self.executable = shutil.which("xfer", path=str(Path(sys.executable).parent))
        if self.executable is None:
            raise SystemExit("the xfer command is not installed beside this Python")
        self.envs = {
            user: {
                **os.environ,
                "XFER_JID": f"{user}@{server.domain}/bench",
                "XFER_PASSWORD": password,
                "XFER_HOST": "127.0.0.1",
                "XFER_PORT": str(server.c2s_port),
                "XFER_TLS": "none",  # loopback only: a throw-away server
                "XFER_DATA_DIR": str(folder / f"xfer-{user}"),
                "XFER_CONFIG": str(folder / "no-config.toml"),
            }
            for user, password in ACCOUNTS.items()
        }
        # The relay case: Prosody's proxy65 only (direct candidates refused).
        self.forced = json.dumps(forcing("socks5-proxy"))
        fingerprints = {}
        for user, env in self.envs.items():
            out = self._run(env, "keys", "--json")
            fingerprints[user] = json.loads(out)["fingerprint"]
        self._run(
            self.envs["sender"],
            "trust",
            f"receiver@{self.domain}",
            fingerprints["receiver"],
        )
        self._run(
            self.envs["receiver"],
            "trust",
            f"sender@{self.domain}",
            fingerprints["sender"],
        )

    def _run(self, env: dict[str, str], *args: str) -> str:
        assert self.executable is not None
        done = subprocess.run(
            [self.executable, *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"xfer {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _command(self, mode: str, *args: str) -> list[str]:
        assert self.executable is not None
        if mode == "direct":
            return [self.executable, *args]
        return [sys.executable, "-P", "-c", FORCED_XFER, self.forced, *args]

    def env(self, role: str) -> dict[str, str]:
        return self.envs[role]

    def receiver(self, mode: str, inbox: Path, n: int) -> list[str]:
        del n
        return self._command(
            mode, "receive", "--once", "--yes", "--dir", str(inbox), "--json", "--quiet"
        )

    def ready(self, receiver: Timed) -> bool:
        return '"event": "ready"' in receiver.out.read_text(errors="replace")

    def sender(self, mode: str, path: Path, n: int) -> list[str]:
        del n
        return self._command(
            mode,
            "send",
            str(path),
            "--to",
            f"receiver@{self.domain}",
            "--json",
            "--quiet",
        )

    def check(self, mode: str, sender: Timed, receiver: Timed) -> dict[str, Any]:
        del receiver
        events = [json.loads(line) for line in sender.out.read_text().splitlines()]
        (sent,) = [e for e in events if e.get("event") == "sent"]
        want = "socks5-direct" if mode == "direct" else "socks5-proxy"
        if sent["transport"] != want:
            raise RuntimeError(
                f"xfer {mode}: wanted {want}, it took {sent['transport']}"
            )
        return {"path": want, "send_file_s": sent["seconds"]}

    def startup(self) -> list[str]:
        assert self.executable is not None
        return [self.executable, "--version"]

    def server_cpu(self) -> float:
        return cpu_seconds(self.prosody_pid)


class WormholeCLI:
    """``wormhole send`` and ``wormhole receive`` with the local mailbox and
    transit relay."""

    name = "wormhole"

    def __init__(
        self, env: _wormhole_env.WormholeEnv, servers: _wormhole_env.Servers
    ) -> None:
        self.venv = env
        self.options = servers.options()
        self.server_pids = servers.pids
        self.environ = {
            k: v for k, v in os.environ.items() if not k.startswith("WORMHOLE_")
        }

    def env(self, role: str) -> dict[str, str]:
        del role
        return self.environ

    @staticmethod
    def code(n: int) -> str:
        return f"{n}-purple-sausages"

    def receiver(self, mode: str, inbox: Path, n: int) -> list[str]:
        listen = ["--no-listen"] if mode == "relay" else []
        return self.venv.command(
            *self.options,
            "receive",
            "--accept-file",
            "--hide-progress",
            *listen,
            "--output-file",
            str(inbox / "received.bin"),
            self.code(n),
        )

    def ready(self, receiver: Timed) -> bool:
        # printed once it is connected to the mailbox, has claimed the code
        # and has waited a second for the sender
        return "Waiting for sender" in receiver.err.read_text(errors="replace")

    def sender(self, mode: str, path: Path, n: int) -> list[str]:
        listen = ["--no-listen"] if mode == "relay" else []
        return self.venv.command(
            *self.options,
            "send",
            "--code",
            self.code(n),
            "--hide-progress",
            "--no-qr",
            *listen,
            str(path),
        )

    def check(self, mode: str, sender: Timed, receiver: Timed) -> dict[str, Any]:
        del receiver
        lines = [x for x in sender.text().splitlines() if x.startswith("Sending (")]
        if len(lines) != 1:
            raise RuntimeError(f"wormhole {mode}: no 'Sending (...)' line")
        relayed = "relay:" in lines[0]
        if relayed != (mode == "relay") or "127.0.0.1" not in lines[0]:
            raise RuntimeError(f"wormhole {mode}: it took {lines[0]!r}")
        return {"path": lines[0].removeprefix("Sending (").removesuffix(")..")}

    def startup(self) -> list[str]:
        return [str(self.venv.wormhole), "--version"]

    def server_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.server_pids)


# -- the measurements ----------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def wait_ready(receiver: Timed, ready: Callable[[Timed], bool]) -> None:
    """Until the receiver says it is waiting and its CPU time stands still."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready(receiver):
        if not receiver.running():
            receiver.result()  # raises with its output
            raise RuntimeError(f"{receiver.name} exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{receiver.name}: not ready in {READY_TIMEOUT:g} s")
        time.sleep(0.02)
    last = receiver.cpu()
    while True:
        time.sleep(IDLE)
        now = receiver.cpu()
        if now == last or time.monotonic() > deadline:
            return
        last = now


def scrub(text: str) -> str:
    """``text`` without this machine's paths (for the report)."""
    places = {
        str(Path(__file__).resolve().parent.parent): "<repo>",
        sys.prefix: "<xfer venv>",
        tempfile.gettempdir(): "<tmp>",
        str(Path.home()): "~",
    }
    for place, name in places.items():
        text = text.replace(place, name)
    return text


class Bench:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0
        #: transfers that failed and were run again (at most RETRIES times)
        self.failures: list[dict[str, str]] = []

    def measure(self, tool: Tool, mode: str, path: Path, digest: str) -> dict[str, Any]:
        """:meth:`transfer`, run again if it fails (a loaded machine can
        time something out); the failures are reported."""
        for attempt in range(RETRIES + 1):
            try:
                return self.transfer(tool, mode, path, digest)
            except RuntimeError as exc:
                if attempt == RETRIES:
                    raise
                print(
                    f"  {tool.name} {mode}: failed, once more: {exc}", file=sys.stderr
                )
                self.failures.append(
                    {"tool": tool.name, "mode": mode, "error": scrub(str(exc)[-2000:])}
                )
        raise AssertionError("unreachable")

    def transfer(
        self, tool: Tool, mode: str, path: Path, digest: str
    ) -> dict[str, Any]:
        """One transfer: the receiver waiting, then the sender; its figures."""
        self.n += 1
        n = self.n
        work = self.folder / f"t{n}"
        inbox = work / "inbox"
        inbox.mkdir(parents=True)
        server0 = tool.server_cpu()
        receiver = Timed(
            "receiver", tool.receiver(mode, inbox, n), tool.env("receiver"), work
        )
        try:
            wait_ready(receiver, tool.ready)
            sender = Timed(
                "sender", tool.sender(mode, path, n), tool.env("sender"), work
            )
            try:
                sender.join(TIMEOUT)
                receiver.join(60)
            finally:
                sender.kill()
        finally:
            receiver.kill()
        assert sender.ended is not None
        assert receiver.ended is not None
        server = tool.server_cpu() - server0
        s_cpu, s_sys, s_rss = sender.result()
        r_cpu, r_sys, r_rss = receiver.result()
        row = tool.check(mode, sender, receiver)
        files = [p for p in inbox.rglob("*") if p.is_file()]
        if len(files) != 1 or sha256(files[0]) != digest:
            raise RuntimeError(f"{tool.name} {mode}: the received file differs")
        shutil.rmtree(work)
        end = max(sender.ended, receiver.ended)
        return {
            "wall_s": end - sender.started,
            "sender_exit_s": sender.ended - sender.started,
            "receiver_exit_s": receiver.ended - sender.started,
            "sender_cpu_s": s_cpu,
            "receiver_cpu_s": r_cpu,
            "server_cpu_s": server,
            "sender_sys_s": s_sys,
            "receiver_sys_s": r_sys,
            "sender_rss_mib": s_rss,
            "receiver_rss_mib": r_rss,
            **row,
        }

    def startup(self, tool: Tool) -> dict[str, Any]:
        self.n += 1
        work = self.folder / f"t{self.n}"
        work.mkdir()
        run = Timed("version", tool.startup(), tool.env("sender"), work)
        run.join(60)
        assert run.ended is not None
        cpu, _, rss = run.result()
        shutil.rmtree(work)
        return {"wall_s": run.ended - run.started, "cpu_s": cpu, "rss_mib": rss}


# -- the report ------------------------------------------------------------------------


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def summarize(
    big: list[dict[str, Any]], small: list[dict[str, Any]], size: int
) -> dict[str, float | None]:
    """The medians of one tool on one path."""
    # The data phase: what the big transfer took beyond the small one, same
    # round (none when start-up noise hides it, as with --quick's small file).
    data = [
        size / (b["wall_s"] - s["wall_s"]) / 1e6
        for b, s in zip(big, small, strict=True)
        if b["wall_s"] > s["wall_s"]
    ]
    out: dict[str, float | None] = {
        "mb_s": statistics.median(size / b["wall_s"] / 1e6 for b in big),
        "mb_s_best": max(size / b["wall_s"] / 1e6 for b in big),
        "wall_s": median(big, "wall_s"),
        "data_mb_s": statistics.median(data) if data else None,
        "latency_ms": 1000 * median(small, "wall_s"),
    }
    for role in ("sender", "receiver"):
        cpu_big, cpu_small = (
            median(big, f"{role}_cpu_s"),
            median(small, f"{role}_cpu_s"),
        )
        out[f"{role}_cpu_s_per_gib"] = (cpu_big - cpu_small) / (size / GiB)
        # of which in the kernel (sockets, file writes, the receiver's fsync)
        sys_big, sys_small = (
            median(big, f"{role}_sys_s"),
            median(small, f"{role}_sys_s"),
        )
        out[f"{role}_sys_cpu_s_per_gib"] = (sys_big - sys_small) / (size / GiB)
        out[f"{role}_cpu_s_small"] = cpu_small
        out[f"{role}_rss_mib_small"] = median(small, f"{role}_rss_mib")
        out[f"{role}_rss_mib_big"] = median(big, f"{role}_rss_mib")
    cpu_big, cpu_small = median(big, "server_cpu_s"), median(small, "server_cpu_s")
    out["server_cpu_s_per_gib"] = (cpu_big - cpu_small) / (size / GiB)
    if "send_file_s" in big[0]:
        out["send_file_s"] = median(big, "send_file_s")
        out["send_file_mb_s"] = size / max(median(big, "send_file_s"), 1e-6) / 1e6
    return {k: rounded(k, v) for k, v in out.items()}


def rounded(key: str, value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3 if key.endswith("_s") or "cpu" in key else 1) + 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


#: (key, label, decimals, note) of the table's rows
ROWS = (
    ("mb_s", "throughput, MB/s", 1, "higher is better"),
    ("mb_s_best", "  best round, MB/s", 1, "the least disturbed (shared machine)"),
    ("data_mb_s", "  data phase, MB/s", 1, "size / (its time - the 1 KiB time)"),
    ("latency_ms", "1 KiB, ms", 0, "receiver waiting; start to both exited"),
    ("sender_cpu_s_per_gib", "sender CPU, s/GiB", 2, "net of the 1 KiB run"),
    ("receiver_cpu_s_per_gib", "receiver CPU, s/GiB", 2, "net of the 1 KiB run"),
    (
        "sender_sys_cpu_s_per_gib",
        "  sender kernel, s/GiB",
        2,
        "system time, of the above",
    ),
    ("receiver_sys_cpu_s_per_gib", "  receiver kernel, s/GiB", 2, ""),
    ("server_cpu_s_per_gib", "servers' CPU, s/GiB", 2, "Prosody / mailbox + relay"),
    ("sender_cpu_s_small", "sender CPU 1 KiB, s", 2, "start-up and set-up"),
    ("receiver_cpu_s_small", "receiver CPU 1 KiB, s", 2, ""),
    ("sender_rss_mib_small", "sender RSS 1 KiB, MiB", 1, "peak"),
    ("sender_rss_mib_big", "sender RSS {big}, MiB", 1, ""),
    ("receiver_rss_mib_small", "receiver RSS 1 KiB, MiB", 1, ""),
    ("receiver_rss_mib_big", "receiver RSS {big}, MiB", 1, ""),
)


def cell(value: float | None, decimals: int, width: int = 8) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{decimals}f}"


def cpu_facts() -> dict[str, Any]:
    model, flags = "", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    memory = 0
    with contextlib.suppress(OSError, ValueError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = int(first.split()[1]) * 1024
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in FLAGS},
        "memory_gib": round(memory / GiB, 1),
    }


def print_table(
    results: dict[str, dict[str, Any]], startup: dict[str, dict[str, float]], mib: int
) -> None:
    print(f"{'':26}" + "".join(f"| {m:^24} " for m in MODES))
    print(f"{'':26}" + f"| {'xfer':>8} {'wormhole':>8} {'x/w':>5} " * len(MODES))
    print("-" * 80)
    for key, label, decimals, note in ROWS:
        line = f"{label.format(big=f'{mib} MiB'):26}"
        for mode in MODES:
            r = results[mode]
            line += (
                f"| {cell(r['xfer'][key], decimals)} "
                f"{cell(r['wormhole'][key], decimals)} {cell(r['ratio'][key], 2, 5)} "
            )
        print(f"{line}  {note}")
    line = f"{'xfer send_file, MB/s':26}"
    for mode in MODES:
        line += f"| {cell(results[mode]['xfer']['send_file_mb_s'], 1)} {'':14} "
    print(f"{line}  the sender's own figure")
    print(
        "\nstart-up alone (--version): "
        + "; ".join(
            f"{name} {1000 * s['wall_s']:.0f} ms, {s['cpu_s']:.2f} s CPU, "
            f"{s['rss_mib']:.1f} MiB"
            for name, s in startup.items()
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="the big file (MiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="a 4 MiB file, one round: does it work?"
    )
    parser.add_argument(
        "--wormhole-venv",
        type=Path,
        default=_wormhole_env.default_venv_dir(),
        help="magic-wormhole's own environment, made if missing "
        "(default: ~/.cache/xfer-bench/wormhole-venv)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="for the files")
    add_json_option(parser, "wormhole")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.rounds = 4, 1
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is missing (Debian: apt-get install time)")

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    venv = _wormhole_env.prepare(args.wormhole_venv.expanduser())
    compiled = compile_xfer()  # as installed: wormhole's environment is pip's
    size = args.mib * MiB
    samples: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        mode: {tool: {"big": [], "small": []} for tool in ("xfer", "wormhole")}
        for mode in MODES
    }
    boots: dict[str, list[dict[str, Any]]] = {"xfer": [], "wormhole": []}
    folder = Path(tempfile.mkdtemp(prefix="xfer-wormhole-", dir=args.dir))
    try:
        files = {"big": folder / "big.bin", "small": folder / "small.bin"}
        write_random(files["big"], size)
        write_random(files["small"], SMALL)
        digests = {k: sha256(p) for k, p in files.items()}
        bench = Bench(folder)
        with (
            LocalProsody(accounts=dict(ACCOUNTS)) as server,
            _wormhole_env.servers(venv, folder / "wormhole-servers") as relay,
        ):
            tools: list[Tool] = [XferCLI(server, folder), WormholeCLI(venv, relay)]
            print("warming up: a 1 KiB transfer per tool and path", file=sys.stderr)
            for mode in MODES:
                for tool in tools:
                    bench.measure(tool, mode, files["small"], digests["small"])
            cases = [(m, k) for k in ("big", "small") for m in MODES]
            for r in range(args.rounds):
                for i, (mode, kind) in enumerate(cases):
                    order = tools if (r + i) % 2 == 0 else tools[::-1]
                    for tool in order:
                        print(
                            f"round {r + 1}/{args.rounds}: {tool.name} {mode} {kind}",
                            file=sys.stderr,
                        )
                        row = bench.measure(tool, mode, files[kind], digests[kind])
                        samples[mode][tool.name][kind].append(row)
                for tool in tools if r % 2 else tools[::-1]:
                    boots[tool.name].append(bench.startup(tool))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started

    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        per = {
            name: summarize(s["big"], s["small"], size)
            for name, s in samples[mode].items()
        }
        results[mode] = {
            "xfer": per["xfer"],
            "wormhole": per["wormhole"],
            "ratio": {
                k: ratio(v, per["wormhole"][k])
                for k, v in per["xfer"].items()
                if k in per["wormhole"]
            },
            "xfer_path": samples[mode]["xfer"]["big"][0]["path"],
            "wormhole_path": samples[mode]["wormhole"]["big"][0]["path"],
        }
    startup = {
        name: {k: round(median(rows, k), 3) for k in ("wall_s", "cpu_s", "rss_mib")}
        for name, rows in boots.items()
    }

    print(
        f"\nxfer {version('xfer')} against magic-wormhole "
        f"{venv.versions['magic-wormhole']}, both CLIs; {args.mib} MiB and 1 KiB "
        f"files; medians of {args.rounds} round(s); MB = 10**6 bytes;\n"
        "x/w = xfer / wormhole (throughput: above 1 is xfer faster; the rest: "
        "above 1 is xfer costlier)\n"
    )
    print_table(results, startup, args.mib)
    print(
        "\ndirect: xfer SOCKS5 direct / wormhole direct hints; relay: xfer through "
        "Prosody's proxy65 (the CLI with forced\ntransport settings: it has no "
        "option for it) / wormhole through its transit relay (--no-listen on both "
        "sides).\nThe xfer receiver fsyncs the file before renaming it into place; "
        "wormhole's does not."
    )

    report = {
        "machine": {
            **machine_info(),
            **cpu_facts(),
            "load_avg_1m_before": load_before,
        },
        "versions": {
            "xfer": version("xfer"),
            "wormhole": venv.versions,
        },
        "params": {
            "mib": args.mib,
            "small_bytes": SMALL,
            "rounds": args.rounds,
            "quick": args.quick,
            "wormhole_venv_reused": venv.reused,
            "wormhole_venv_prepare_s": round(venv.prepare_seconds, 1),
            "seconds": round(elapsed, 1),
        },
        "method": {
            "timing": "receiver started first and waiting (its ready line, then "
            "idle); from the sender's start to both processes exited",
            "cpu_rss": "/usr/bin/time per process: user + system CPU, peak RSS",
            "server_cpu": "CPU of the servers (xfer: Prosody, c2s and proxy65; "
            "wormhole: mailbox server and transit relay) from before the "
            "receiver's start to both exited, from /proc",
            "cpu_s_per_gib": "(median CPU of the big transfer - median CPU of the "
            "1 KiB transfer) / its size in GiB",
            "data_mb_s": "per round: size / (big transfer's time - 1 KiB transfer's "
            "time), median",
            "order": "the tools alternate which goes first, case by case and round "
            "by round; one warm-up 1 KiB transfer per tool and path first",
            "xfer": "its CLI (xfer receive --once --yes, xfer send --to) on a "
            "throw-away Prosody on loopback; relay: the same CLI with the "
            "xfer_transfer settings of xfer.testing.transports.forcing"
            "('socks5-proxy') added to xfer.connect, since no option forces it",
            "wormhole": "its CLI (wormhole receive --accept-file CODE, wormhole send "
            "--code CODE) with a local mailbox server and transit relay, direct "
            "hints limited to loopback; relay: --no-listen on both sides",
            "fsync": "the xfer receiver fsyncs before renaming; wormhole does not",
            "bytecode": "xfer's packages byte-compiled first ("
            + ", ".join(compiled)
            + "), as pip compiles an installed package (and wormhole's)",
        },
        "results": results,
        "failed_and_repeated": bench.failures,
        "startup_version_command": startup,
        "samples": {"transfers": samples, "startup": boots},
    }
    if args.quick:
        print(
            "\n--quick checks that it all runs: its figures (per GiB above all) mean little"
        )
    if bench.failures:
        print(
            f"\n{len(bench.failures)} transfer(s) failed and ran again (see the JSON)"
        )
    write_report(args.json, "wormhole", report, lead=f"\n{elapsed:.0f} s; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
