"""magic-wormhole for ``benchmarks/wormhole.py``: its own virtual environment
(never xfer's), its mailbox server and transit relay on loopback, and the
command lines of its CLI.

The environment is made once with ``python3 -m venv`` and pip, in a directory
the user chooses (by default ``~/.cache/xfer-bench/wormhole-venv``, under
``XDG_CACHE_HOME`` if set), and reused while it holds the pinned versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

#: What the benchmark installs (the newest releases when it was written).
PINS = {
    "magic-wormhole": "0.24.0",
    "magic-wormhole-mailbox-server": "0.8.0",
    "magic-wormhole-transit-relay": "0.5.0",
}
#: Reported beside the pins: what they pulled in that does the work.
DEPENDENCIES = ("twisted", "autobahn", "pynacl", "spake2", "cryptography")
#: Written into the environment once pip succeeded; names what it holds.
MARKER = "xfer-bench-pins.json"

#: The wormhole CLI as its console script runs it, except that the direct
#: hints it offers are limited to loopback addresses: it offers every address
#: of the machine's interfaces (``wormhole.ipaddrs.find_addresses``, which
#: drops 127.0.0.1 when there is any other), and this benchmark sends nothing
#: beyond loopback. Both peers still offer, and try, direct hints first.
LOOPBACK_WORMHOLE = """\
import sys
import wormhole.ipaddrs as ipaddrs
found = ipaddrs.find_addresses
ipaddrs.find_addresses = lambda: [
    a for a in found() if a.startswith("127.")
] or ["127.0.0.1"]
from wormhole.cli.cli import wormhole
sys.argv[0] = "wormhole"
sys.exit(wormhole())
"""


def default_venv_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "xfer-bench" / "wormhole-venv"


@dataclass(frozen=True)
class WormholeEnv:
    """A prepared environment: its interpreter and what it holds."""

    root: Path
    versions: dict[str, str]
    #: True if an earlier run had made it (nothing was installed now).
    reused: bool
    prepare_seconds: float

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def twist(self) -> Path:
        return self.root / "bin" / "twist"

    @property
    def wormhole(self) -> Path:
        return self.root / "bin" / "wormhole"

    def command(self, *args: str) -> list[str]:
        """``wormhole ARGS`` through :data:`LOOPBACK_WORMHOLE`."""
        return [str(self.python), "-P", "-c", LOOPBACK_WORMHOLE, *args]


def _installed(root: Path) -> dict[str, str] | None:
    """What the environment at ``root`` holds, or None if it is not one of
    ours with the pinned versions."""
    marker = root / MARKER
    python = root / "bin" / "python"
    try:
        pins = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if pins != PINS or not python.exists():
        return None
    names = [*PINS, *DEPENDENCIES]
    code = (
        "import json, platform, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {'python': platform.python_version()}\n"
        "for name in sys.argv[1:]:\n"
        "    try: out[name] = version(name)\n"
        "    except PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(python), "-c", code, *names],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(done.stdout)
    if any(versions.get(name) != pin for name, pin in PINS.items()):
        return None
    return versions


def prepare(root: Path) -> WormholeEnv:
    """The environment at ``root``, made (or remade) if it does not hold the
    pinned versions. Exits with a message if that fails."""
    started = time.perf_counter()
    versions = _installed(root)
    if versions is not None:
        return WormholeEnv(root, versions, True, time.perf_counter() - started)
    print(f"preparing magic-wormhole in its own environment: {root}", file=sys.stderr)
    python3 = shutil.which("python3") or sys.executable
    steps = [
        [python3, "-m", "venv", "--clear", str(root)],
        [
            str(root / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *(f"{name}=={pin}" for name, pin in PINS.items()),
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise SystemExit(
                f"cannot prepare magic-wormhole in {root}: '{' '.join(step[:4])} "
                f"...' failed ({done.returncode}):\n{tail}\n"
                "(needs python3 with venv and pip, and access to the package index; "
                "--wormhole-venv DIR picks another directory)"
            )
    (root / MARKER).write_text(json.dumps(PINS))
    versions = _installed(root)
    if versions is None:
        raise SystemExit(f"magic-wormhole in {root} does not run after installing it")
    return WormholeEnv(root, versions, False, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End a process started with ``start_new_session`` and all of its group:
    SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Servers:
    mailbox_port: int
    relay_port: int
    #: the process ids of the mailbox server and the transit relay
    pids: tuple[int, ...]

    @property
    def relay_url(self) -> str:
        return f"ws://127.0.0.1:{self.mailbox_port}/v1"

    @property
    def transit_helper(self) -> str:
        return f"tcp:127.0.0.1:{self.relay_port}"

    def options(self) -> list[str]:
        """The wormhole options that make a client use these servers."""
        return ["--relay-url", self.relay_url, "--transit-helper", self.transit_helper]


@contextlib.contextmanager
def servers(env: WormholeEnv, folder: Path, timeout: float = 60.0) -> Iterator[Servers]:
    """A mailbox server and a transit relay (``twist wormhole-mailbox`` and
    ``twist transitrelay``) on loopback, on free ports, each in its own
    process group, stopped on the way out whatever happens."""
    folder.mkdir(parents=True, exist_ok=True)
    mailbox, relay = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in (
            (
                "mailbox",
                [
                    "wormhole-mailbox",
                    f"--port=tcp:{mailbox}:interface=127.0.0.1",
                    f"--channel-db={folder / 'mailbox.sqlite'}",
                ],
            ),
            ("relay", ["transitrelay", f"--port=tcp:{relay}:interface=127.0.0.1"]),
        ):
            with (folder / f"{name}.log").open("wb") as log:
                started.append(
                    subprocess.Popen(
                        [str(env.twist), *args],
                        cwd=folder,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        for port, process in zip((mailbox, relay), started, strict=True):
            while not _listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    logs = "".join(
                        (folder / f"{n}.log").read_text(errors="replace")[-2000:]
                        for n in ("mailbox", "relay")
                    )
                    raise RuntimeError(f"a wormhole server did not start:\n{logs}")
                time.sleep(0.1)
        yield Servers(mailbox, relay, tuple(p.pid for p in started))
    finally:
        for process in started:
            stop_group(process)
