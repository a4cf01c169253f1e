"""What the deploy tests share: the command line as a user in a client
namespace of ``xfer.testing.federation``, a topology started for a module,
a transfer checked end to end, and a row of the table."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import require_or_skip
from tests.deploy._table import Run, record
from xfer.testing.federation import Federation
from xfer.testing.netns import NetnsUnavailable, netns_available

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


@contextlib.contextmanager
def federation(**options: Any) -> Iterator[Federation]:
    """alice@a.test and bob@b.test in a started topology (``options`` go to
    :class:`Federation`), closed afterwards; skipped (failed under CI)
    where network namespaces cannot be made."""
    why = netns_available()
    require_or_skip(why is None, f"network namespaces ({why})")
    topology = Federation(
        accounts={"a": {"alice": PASSWORDS["alice"]}, "b": {"bob": PASSWORDS["bob"]}},
        **options,
    )
    try:
        topology.start()
    except NetnsUnavailable as exc:  # no CAP_SYS_ADMIN, say: skip, or fail in CI
        require_or_skip(False, f"network namespaces ({exc})")
    try:
        yield topology
    finally:
        topology.close()


class CommandLineUser:
    """A user of the command line on one host (a namespace) of a test
    topology: ``host`` runs a command there, ``env`` is its environment."""

    def __init__(self, jid: str, host: Callable[[list[str]], list[str]]) -> None:
        self.jid = jid
        self.host = host
        self.env: dict[str, str] = {}

    def argv(self, *args: str) -> list[str]:
        return self.host([sys.executable, "-m", "xfer_cli", *args])

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fingerprint(self) -> str:
        done = self.run("keys", "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["fingerprint"])


class Person(CommandLineUser):
    """A user of the command line in one client namespace of a federation:
    its server found by SRV, STARTTLS, the topology's CA."""

    def __init__(self, user: str, side: str, net: Federation, home: Path) -> None:
        super().__init__(
            f"{user}@{net.running[side].domain}",
            functools.partial(net.command, f"c{side}"),
        )
        self.net, self.side = net, side
        assert net.ca_file is not None
        self.ca_file = str(net.ca_file)
        self.env = {
            **os.environ,
            "XFER_JID": f"{self.jid}/cli",
            "XFER_PASSWORD": PASSWORDS[user],
            "XFER_DATA_DIR": str(home / f"{user}-data"),
            "XFER_CONFIG": str(home / "no-config.toml"),
        }
        for name in ("XFER_HOST", "XFER_PORT", "XFER_TLS", "XFER_CA_FILE"):
            self.env.pop(name, None)


def trusting_people(net: Federation, home: Path) -> tuple[Person, Person]:
    """alice and bob, each trusting the other's key (as after a check)."""
    alice = Person("alice", "a", net, home)
    bob = Person("bob", "b", net, home)
    for one, other in ((alice, bob), (bob, alice)):
        done = one.run("trust", other.jid, other.fingerprint())
        assert done.returncode == 0, done.stderr
    return alice, bob


class Receiving:
    """``xfer receive --once`` running in the receiver's namespace."""

    def __init__(self, person: Person, inbox: Path) -> None:
        self.process = person.start(
            "receive", "--yes", "--once", "--dir", str(inbox), "--json",
            "--ca-file", person.ca_file,
        )  # fmt: skip
        assert json.loads(self.next_line())["event"] == "ready"

    def next_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            pytest.fail(f"the receiver ended: {self.process.stderr.read()}")
        return line

    def wait_for(self, event: str) -> dict[str, Any]:
        while True:
            found: dict[str, Any] = json.loads(self.next_line())
            if found["event"] == event:
                return found

    def finish(self) -> None:
        try:
            self.process.communicate(timeout=30)  # --once: it exits by itself
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.communicate(timeout=10)


def sent_event(stdout: str) -> dict[str, Any]:
    """The sender's "sent" event in its ``--json`` output."""
    [event] = [e for e in map(json.loads, stdout.splitlines()) if e["event"] == "sent"]
    return event


def send_checked(
    sender: Person, receiver: Person, tmp_path: Path, size: int
) -> dict[str, Any]:
    """``sender`` sends ``size`` random bytes to ``receiver``, which must
    get them intact; the sender's "sent" event."""
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))
    inbox = tmp_path / "inbox"
    receiving = Receiving(receiver, inbox)
    try:
        sent = sender.run(
            "send", str(src), "--to", receiver.jid, "--json",
            "--ca-file", sender.ca_file,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    finally:
        receiving.finish()
    assert (inbox / "payload.bin").read_bytes() == src.read_bytes()
    return sent_event(sent.stdout)


def note(section: str, scenario: str, size: int, event: dict[str, Any]) -> Run:
    """A row of the table (``section``) from a "sent" event, also printed."""
    run = Run(
        scenario=scenario,
        transport=event["transport"],
        via=event["via"],
        size=size,
        seconds=event["seconds"],
        setup_seconds=event["setup_seconds"],
        after_failure=event["after_failure"],
    )
    record(section, run)
    print(  # the measured values, for the log
        f"\n{scenario}: {run.transport} via {run.via or '-'}, "
        f"{size / run.seconds / 1e6:.4f} MB/s, first byte "
        f"{run.setup_seconds:.2f} s after the accept, "
        f"{run.after_failure} s after the last candidate failed, "
        f"{event['breaks']} break(s), {run.seconds:.1f} s in all"
    )
    return run


def on_disk(inbox: Path) -> int:
    """How many received bytes are on disk under ``inbox`` (any file)."""
    return sum(p.stat().st_size for p in inbox.rglob("*") if p.is_file())


def wait_for_data(inbox: Path, timeout: float = 60) -> None:
    """Until some received data is on disk under ``inbox`` (any file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_disk(inbox):
            return
        time.sleep(0.05)
    pytest.fail(f"no data arrived in {timeout} s")
