"""Outages and stock server settings across two federated domains (issue 19,
"Prove it"): a rate-limited server, the receiver's server restarted in the
middle of a transfer (server-assigned and fixed resources), and a receiver
that logs in again after offline storage replayed an OTR message.

The topology of ``tests/deploy/test_federation.py`` (``xfer.testing.
federation``: alice@a.test and bob@b.test, each client and each Prosody in
its own namespace, TLS on c2s and s2s, a local DNS), with both servers as
stock Prosody runs: offline storage on (stream management's hibernation cut
to 1 s, so that a dead connection's messages are stored at once). The
clients are the command line. Direct paths and both proxies are dropped in
every case here: the data then crosses both servers (IBB), which is what an
outage or a rate limit on a server acts on.

The bounds asserted are functional ones (it completes, it resumes, it works
"at once" rather than after a 30 s timeout), with margins for a loaded
machine; the measured figures are printed and, with ``XFER_DEPLOY_TABLE``,
written to the table (section "outages").
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._cli import (
    Person,
    Receiving,
    federation,
    note,
    on_disk,
    sent_event,
    trusting_people,
    wait_for_data,
)
from tests.deploy._table import Run
from xfer.testing.federation import Federation
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.deploy

SECTION = "outages"
KiB, MiB = 1 << 10, 1 << 20
#: The rate-limited server's c2s limit (mod_limits, in its syntax: 128000
#: bytes/s) and burst. (Prosody reads a throttled stream in whole reads of
#: up to 256 KiB here, then waits: data comes in bursts of that size.)
RATE, BURST, RATE_BYTES = "128kb/s", "1s", 128_000
#: How long the receiver's server stays down.
DOWN = 3.0
#: "At once": the send after the replay must not fail nor wait for the 30 s
#: key exchange timeout: a bound on correctness, not speed. (A send of a
#: small file here takes 5-8 s: a new process, TLS, 2 s of unreachable
#: candidates, IBB across two servers.)
AT_ONCE = 20.0


@pytest.fixture(scope="module")
def net() -> Any:
    with federation() as topology:
        for side in ("a", "b"):  # as stock servers run
            topology.reconfigure(side, offline=True, hibernation=1)
        topology.block(direct=True, proxies=True)
        yield topology


@pytest.fixture(scope="module")
def people(net: Federation, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return trusting_people(net, tmp_path_factory.mktemp("outages-home"))


def _note(scenario: str, size: int, event: dict[str, Any]) -> Run:
    return note(SECTION, scenario, size, event)


def _payload(tmp_path: Path, size: int) -> Path:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))
    return src


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- a rate-limited server ----------------------------------------------------


class OnTerminal:
    """A command whose stderr is a terminal (so it draws its progress),
    read as it comes: each redrawn or printed line with when it came."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=slave, text=True,
        )  # fmt: skip
        os.close(slave)
        self._reader = threading.Thread(target=self._read, args=(master,))
        self._reader.start()

    def _read(self, fd: int) -> None:
        pending = ""
        try:
            while chunk := os.read(fd, 4096):
                now = time.monotonic()
                pending += chunk.decode(errors="replace")
                *done, pending = re.split(r"[\r\n]", pending)
                self.lines += [(now, x) for x in done if x.strip()]
        except OSError:  # EIO: the command ended
            pass
        finally:
            os.close(fd)

    def wait_for(self, start: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(x.startswith(start) for _, x in self.lines):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"no line {start!r}: {self.lines}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> None:
        try:
            self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        self._reader.join(10)

    def percents(self) -> list[tuple[float, int]]:
        """The progress shown: (when, percent)."""
        found = ((t, re.search(r"\s(\d+)%\s", x)) for t, x in self.lines)
        return [(t, int(m.group(1))) for t, m in found if m]


def test_a_rate_limited_server_carries_ibb_to_the_end_with_honest_progress(
    net: Federation, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """alice's server reads what each client sends at 128 kB/s (mod_limits,
    as Debian ships it but faster); IBB from alice to bob completes, and
    bob's progress line (on a terminal) shows the verified bytes as they
    came, spread over the transfer."""
    alice, bob = people
    size = 1 * MiB  # about five bursts of the server's reads
    src = _payload(tmp_path, size)
    inbox = tmp_path / "inbox"
    net.reconfigure("a", c2s_rate=RATE, c2s_burst=BURST, offline=True, hibernation=1)
    try:
        receiver = OnTerminal(
            bob.argv("receive", "--yes", "--once", "--dir", str(inbox),
                     "--ca-file", bob.ca_file),
            bob.env,
        )  # fmt: skip
        try:
            receiver.wait_for("waiting for files")
            sent = alice.run(
                "send", str(src), "--to", bob.jid, "--json",
                "--ca-file", alice.ca_file,
            )  # fmt: skip
        finally:
            receiver.finish()
    finally:
        net.reconfigure("a", offline=True, hibernation=1)
    assert sent.returncode == 0, sent.stderr
    assert (inbox / src.name).read_bytes() == src.read_bytes()
    event = sent_event(sent.stdout)
    assert event["transport"] == "ibb"
    assert event["breaks"] == 0
    # The server really held alice back: the sealed file, base64 in IBB
    # packets, cannot have gone faster than the limit and its burst.
    assert event["seconds"] > size * 4 / 3 / RATE_BYTES - 2, event
    # bob's progress: verified bytes in steps as they came, never back.
    shown = receiver.percents()
    values = [p for _, p in shown]
    assert values == sorted(values), values
    assert values[-1] == 100
    assert len({p for p in values if 0 < p < 100}) >= 3, values
    # Spread over the transfer, not all at its end: half of it was shown
    # verified well before the end.
    first = next(t for t, p in shown if p > 0)
    half = next(t for t, p in shown if p >= 50)
    end = next(t for t, p in shown if p == 100)
    assert half - first > (end - first) / 5, shown
    saved = next(x for _, x in receiver.lines if x.startswith("saved "))
    assert "in-band (IBB, through the servers)" in saved, saved
    _note(f"a to b, IBB, alice's server limited to {RATE}", size, event)


# -- the receiver's server restarted ------------------------------------------


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "assigned"])
def test_the_receivers_server_restarted_mid_transfer_resumes(
    net: Federation,
    people: tuple[Person, Person],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    fixed: bool,
) -> None:
    """b.test stops as in a crash once bob has some of the file (IBB) and
    comes back on the same ports DOWN s later: bob logs in again, under the
    same resource or one the server assigns, and alice (who sent to his
    bare JID) offers him the rest there; the file verifies. Resume time:
    from the server listening again to more of the file on bob's disk."""
    alice, bob = people
    if not fixed:  # the same account, no resource of its own
        bob = Person("bob", "b", net, tmp_path_factory.mktemp("bob-assigned"))
        bob.env["XFER_JID"] = bob.jid
        bob.env["XFER_DATA_DIR"] = people[1].env["XFER_DATA_DIR"]
    size = 8 * MiB
    src = _payload(tmp_path, size)
    inbox = tmp_path / "inbox"
    receiving = Receiving(bob, inbox)
    sending = alice.start(
        "send", str(src), "--to", bob.jid, "--json", "--ca-file", alice.ca_file
    )
    try:
        first = receiving.wait_for("offer")
        wait_for_data(inbox)
        assert sending.poll() is None, "the transfer ended before the outage"
        down, back = net.outage("b", DOWN)
        resumed = _when_more(inbox, on_disk(inbox))
        out, err = sending.communicate(timeout=180)
        assert sending.returncode == 0, err
        got = receiving.wait_for("received")
    finally:
        if sending.poll() is None:
            sending.kill()
            sending.communicate()
        receiving.finish()
    assert (inbox / src.name).read_bytes() == src.read_bytes()
    event = sent_event(out)
    assert event["transport"] == "ibb"
    assert event["breaks"] >= 1, event
    assert (got["transport"], got["via"]) == ("ibb", "")
    # Where the rest went: bob's full JID now (fixed: the same as before).
    assert event["peer"].startswith(f"{bob.jid}/")
    assert (event["peer"] == f"{bob.jid}/cli") is fixed, event
    assert first["peer"].startswith(f"{alice.jid}/")
    resume = resumed - back
    print(f"\nb.test down {back - down:.1f} s; back -> more on disk {resume:.1f} s")
    kind = "fixed" if fixed else "server-assigned"
    _note(
        f"a to b, IBB, b.test restarted ({kind} resource), "
        f"{resume:.1f} s from back to more data",
        size,
        event,
    )


def _when_more(inbox: Path, than: int, timeout: float = 120) -> float:
    """When more than ``than`` bytes are on disk under ``inbox``."""
    deadline = time.monotonic() + timeout
    while on_disk(inbox) <= than:
        if time.monotonic() > deadline:
            pytest.fail(f"no more data in {timeout} s after the restart")
        time.sleep(0.05)
    return time.monotonic()


# -- offline storage replays an OTR message -------------------------------------


def _stored(net: Federation, side: str, user: str) -> Path:
    server = net.running[side]
    assert isinstance(server, LocalProsody)
    assert server.directory is not None
    host = server.domain.replace(".", "%2e")
    return server.directory / "data" / host / "offline" / f"{user}.list"


def _until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_after_offline_storage_replayed_otr_the_next_send_works_at_once(
    net: Federation, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """bob (a fixed resource, as in the report) is online but his client
    hangs; alice's send reaches it only as an OTR message that is never
    acknowledged, and gives up. bob's client dies; b.test stores the
    message (stream management's delay, then offline storage's) and
    replays it at his next login. bob must not act on it, and alice's
    next send works at once."""
    alice, bob = people
    stored = _stored(net, "b", "bob")
    hung = bob.start("receive", "--yes", "--json", "--ca-file", bob.ca_file)
    try:
        assert hung.stdout is not None
        assert json.loads(hung.stdout.readline())["event"] == "ready"
        # (What earlier tests left for bob is delivered at this login.)
        _until(lambda: not stored.exists(), "older stored messages to go")
        hung.send_signal(signal.SIGSTOP)  # reads nothing, acknowledges nothing
        src = tmp_path / "first.txt"
        src.write_text("never delivered\n")
        lost = alice.run(
            "send", str(src), "--to", bob.jid, "--ca-file", alice.ca_file, timeout=90
        )
        assert lost.returncode != 0, lost.stderr  # bob's client never answered
    finally:
        hung.kill()  # its connection dies, the server's session with it
        hung.communicate()
    _until(stored.exists, "b.test to store what bob never acknowledged")
    replayed = stored.read_text()
    assert "?OTR" in replayed, replayed
    assert "urn:xmpp:delay" in replayed, replayed

    src = _payload(tmp_path, 64 * KiB)
    inbox = tmp_path / "inbox"
    receiving = Receiving(bob, inbox)  # logs in again: the replay comes first
    try:
        _until(lambda: not stored.exists(), "the replay to bob")
        started = time.monotonic()
        sent = alice.run(
            "send", str(src), "--to", bob.jid, "--json", "--ca-file", alice.ca_file
        )
        took = time.monotonic() - started
        assert sent.returncode == 0, sent.stderr
    finally:
        receiving.finish()
    assert (inbox / src.name).read_bytes() == src.read_bytes()
    print(f"\nthe send after the replay took {took:.1f} s (process start included)")
    assert took < AT_ONCE, took
    _note("a to b, IBB, right after an OTR message replayed", src.stat().st_size,
          sent_event(sent.stdout))  # fmt: skip


# -- the topology by hand -------------------------------------------------------


def test_the_topology_by_hand_tells_how_to_run_xfer_and_cleans_up(
    net: Federation,  # only for the same requirements (root, ip, nft)
) -> None:
    """``python -m xfer.testing.federation``: it prints, for each account,
    a command line that runs ``xfer`` as that account in its namespace (it
    works: ``xfer keys`` through it), obeys ``block``/``open``, and removes
    every namespace once its input ends."""
    command = [sys.executable, "-m", "xfer.testing.federation", "carol:pw@a"]
    by_hand = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert by_hand.stdin is not None
    assert by_hand.stdout is not None
    try:
        assert by_hand.stdout.readline() == "as carol@a.test:\n"
        run = shlex.split(by_hand.stdout.readline())
        assert by_hand.stdout.readline().startswith("commands: ")
        # The account, its home and the CA go in the environment, so that
        # every command (keys and trust too) takes the line as printed.
        env = dict(x.split("=", 1) for x in run[:4])
        assert env["XFER_JID"] == "carol@a.test"
        assert Path(env["XFER_CA_FILE"]).read_text().startswith("-----BEGIN")
        xfer = run[4:run.index("<command>")]  # fmt: skip
        assert run[-1] == "<command>"
        namespace = xfer[xfer.index("exec") + 1]
        keys = subprocess.run(
            [*xfer, "keys", "--json"], env={**os.environ, **env},
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert keys.returncode == 0, keys.stderr
        assert len(json.loads(keys.stdout)["fingerprint"]) == 44
        for said, answer in (
            ("block direct s2s", "blocked: direct s2s"),
            ("open", "nothing blocked"),
            ("nonsense", "commands: "),
        ):
            by_hand.stdin.write(said + "\n")
            by_hand.stdin.flush()
            assert by_hand.stdout.readline().startswith(answer)
        assert namespace in _netns()
        by_hand.stdin.close()
        assert by_hand.wait(60) == 0, by_hand.stderr.read() if by_hand.stderr else ""
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()
        for pipe in (by_hand.stdin, by_hand.stdout, by_hand.stderr):
            if pipe is not None:
                pipe.close()
    assert namespace not in _netns()
    assert not Path(env["XFER_DATA_DIR"]).exists()


def _netns() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
