"""What the benchmark scripts share: the ``--json`` option of their command
line and the JSON report they write (``benchmarks/results/<name>.json`` by
default), each report naming its benchmark and the time it was made; and
:func:`compile_xfer`, so that xfer starts as an installed copy does."""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

RESULTS = Path(__file__).resolve().parent / "results"


def add_json_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH``: where the report goes, by default results/<name>.json."""
    parser.add_argument("--json", type=Path, default=RESULTS / f"{name}.json")


def write_report(path: Path, name: str, fields: dict[str, Any], lead: str = "") -> None:
    """Write the report of benchmark ``name`` (its ``fields`` after the name
    and the date) to ``path`` and say so, ``lead`` first."""
    report = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{lead}wrote {path}")


def compile_xfer() -> list[str]:
    """Byte-compile xfer's packages (``xfer``, ``xfer_cli``) where they are.

    An installation from a wheel is compiled when installed (pip does), but a
    development checkout in an environment with ``PYTHONDONTWRITEBYTECODE``
    is compiled from source at every start: some 0.3 s of CPU per process,
    which a start-up or latency figure would otherwise charge to xfer (the
    tools it is compared with are installed by pip). Returns the compiled
    package directories."""
    done = []
    for name in ("xfer", "xfer_cli"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)
            done.append(name)
    return done


# -- worker processes (one per side of a transfer) -------------------------------


def emit(message: dict[str, Any]) -> None:
    """A worker's message to its orchestrator: one line on standard output."""
    sys.stdout.write("@@ " + json.dumps(message) + "\n")
    sys.stdout.flush()


class WorkerProcess:
    """A worker process running ``argv``; ``call`` sends it an operation
    (a JSON line on its standard input) and waits for the reply, keeping the
    events that come before it for :meth:`event`."""

    def __init__(self, name: str, argv: list[str], timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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

    def _next(self, timeout: float | None) -> dict[str, Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer in {wait:g} s") from None
        if message is None:
            raise RuntimeError(f"{self.name} exited ({self.process.wait()})")
        if "error" in message:
            raise RuntimeError(f"{self.name} failed:\n{message['error']}")
        return message

    def call(
        self, op: str, timeout: float | None = None, **args: object
    ) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        while True:
            message = self._next(timeout)
            if "event" not in message:
                reply: dict[str, Any] = message["reply"] or {}
                return reply
            self.events.append(message)

    def event(self, timeout: float | None = None) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        message = self._next(timeout)
        if "event" not in message:
            raise RuntimeError(f"{self.name}: a reply nobody asked for: {message}")
        return message

    def finish(self) -> float:
        """End the process; return its peak RSS in MiB."""
        peak = float(self.call("exit", timeout=60)["peak_rss_mib"])
        self.process.wait(30)
        return peak

    def close(self) -> None:
        """End the process: asked to exit, else killed."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(30)
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
