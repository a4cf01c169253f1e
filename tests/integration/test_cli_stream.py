"""Pipes on the command line end to end: ``tar c | xfer send -`` and
``xfer receive --stdout | tar x`` with real processes and a real Prosody, and
a sender killed mid-stream making the receiving pipeline fail."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli_e2e import Person, friends, people  # noqa: F401

pytestmark = pytest.mark.integration

XFER = f"{shlex.quote(sys.executable)} -m xfer_cli"


def pipeline(person: Person, script: str) -> subprocess.Popen[bytes]:
    """``script`` in bash with pipefail (a pipeline fails if any part does)."""
    return subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", script],
        env=person.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_waiting(proc: subprocess.Popen[bytes]) -> list[bytes]:
    """The receiver's stderr lines up to the one saying it waits."""
    assert proc.stderr is not None
    seen: list[bytes] = []
    waiting = b"waiting for one offer, to standard output, as "
    while waiting not in (line := proc.stderr.readline()):
        assert line, b"".join(seen).decode(errors="replace")
        seen.append(line)
    return seen


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tar_through_a_pipe_reproduces_the_tree(
    friends: tuple[Person, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = friends
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "big.bin").write_bytes(os.urandom(700_000))
    (src / "a" / "small.txt").write_bytes(b"hello\n")
    (src / "empty").write_bytes(b"")
    dest = tmp_path / "dest"
    dest.mkdir()
    receiver = pipeline(
        bob, f"{XFER} receive --stdout --yes | tar x -C {shlex.quote(str(dest))}"
    )
    try:
        wait_waiting(receiver)
        sender = subprocess.run(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"tar c -C {shlex.quote(str(src))} . | {XFER} send - --to {bob.jid}"
                " --name src.tar",
            ],
            env=alice.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        _, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    assert sender.returncode == 0, sender.stderr.decode()
    assert receiver.returncode == 0, err.decode()
    assert tree(dest) == tree(src)
    # Both sides print the SHA-256 of the same bytes.
    said = re.findall(rb"SHA-256 ([0-9a-f]{64})", sender.stderr + err)
    assert len(said) == 2
    assert said[0] == said[1]
    # And the same path the data took (direct on one host).
    paths = re.findall(rb"\([^,()]+, ([^()]+), [0-9.]+ MB/s\)", sender.stderr + err)
    assert len(paths) == 2, (sender.stderr + err).decode()
    assert paths[0] == paths[1]
    assert paths[0].startswith(b"direct to 127.0.0.1:")


def test_a_killed_sender_fails_the_receiving_pipeline(
    friends: tuple[Person, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = friends
    out = tmp_path / "out.bin"
    receiver = pipeline(
        bob, f"{XFER} receive --stdout --yes -q | cat > {shlex.quote(str(out))}"
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        # -q: no status on stderr; the receiver is ready once it is logged
        # in, which the sender's own OTR set-up waits for anyway.
        time.sleep(1.0)
        sender = subprocess.Popen(
            [sys.executable, "-m", "xfer_cli", "send", "-", "--to", bob.jid],
            env=alice.env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert sender.stdin is not None
        data = os.urandom(300_000)
        sender.stdin.write(data)
        sender.stdin.flush()
        deadline = time.monotonic() + 30
        # Standard input is a pipe: live, so all of it goes out (four full
        # chunks and a flushed short one) while the sender waits for more.
        while not out.exists() or out.stat().st_size < len(data):
            assert time.monotonic() < deadline, "no data reached the receiver"
            time.sleep(0.05)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
        killed = time.monotonic()
        _, err = receiver.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
    assert receiver.returncode != 0
    # It tells of the cut at once (the killed peer's server answers nothing
    # for a while; that is not waited for).
    assert took < 10, took
    written = out.read_bytes()
    assert written == data[: len(written)]
    assert len(written) == len(data)
    assert f"stream cut after {len(written)} verified bytes".encode() in err, err


def test_a_declined_stream_fails_both_sides_and_writes_nothing(
    friends: tuple[Person, Person],  # noqa: F811
) -> None:
    alice, bob = friends
    receiver = pipeline(bob, f"{XFER} receive --stdout --yes --from carol@elsewhere")
    try:
        wait_waiting(receiver)
        sender = subprocess.run(
            [sys.executable, "-m", "xfer_cli", "send", "-", "--to", bob.jid],
            env=alice.env,
            input=b"some data",
            capture_output=True,
            timeout=60,
            check=False,
        )
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert (receiver.returncode, out) == (6, b"")
    assert b"nothing was written" in err
    assert sender.returncode == 6, sender.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_an_interrupted_sender_tells_the_receiver_it_cancelled(
    friends: tuple[Person, Person],  # noqa: F811
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    # Ctrl-C or SIGTERM: the sender ends the Jingle session with "cancel"
    # (acknowledged) before its bytestream goes, so the receiver tells of a
    # cancel, not of a connection reset; and fails, with the exact count.
    alice, bob = friends
    out = tmp_path / "out.bin"
    receiver = pipeline(
        bob, f"{XFER} receive --stdout --yes -q | cat > {shlex.quote(str(out))}"
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(1.0)
        sender = subprocess.Popen(
            [sys.executable, "-m", "xfer_cli", "send", "-", "--to", bob.jid],
            env=alice.env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        data = send_until_received(sender, out)
        sender.send_signal(sig)
        # Its standard input stays open (communicate() would close it: an
        # end of input racing the signal).
        sender.wait(timeout=30)
        assert sender.stderr is not None
        sender_err = sender.stderr.read()
        _, err = receiver.communicate(timeout=60)
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
    assert sender.returncode == 130, sender_err  # interrupted
    # It says how far it got (and not that nothing was written).
    said = f"interrupted: the stream was cut after {len(data)} bytes of standard input"
    assert said.encode() in sender_err, sender_err
    assert receiver.returncode != 0
    assert out.read_bytes() == data
    assert f"stream cut after {len(data)} verified bytes".encode() in err, err
    assert b"cancelled the stream" in err, err
    assert b"reset" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_an_interrupted_receiver_tells_the_sender_it_cancelled(
    friends: tuple[Person, Person],  # noqa: F811
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    alice, bob = friends
    out = tmp_path / "out.bin"
    sender: subprocess.Popen[bytes] | None = None
    with out.open("wb") as sink:
        receiver = subprocess.Popen(
            [sys.executable, "-m", "xfer_cli", "receive", "--stdout", "--yes"],
            env=bob.env,
            stdout=sink,
            stderr=subprocess.PIPE,
        )
    try:
        wait_waiting(receiver)
        sender = subprocess.Popen(
            [sys.executable, "-m", "xfer_cli", "send", "-", "--to", bob.jid],
            env=alice.env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        data = send_until_received(sender, out)
        receiver.send_signal(sig)
        _, err = receiver.communicate(timeout=30)
        sender.wait(timeout=60)  # with its input open, as above
        assert sender.stderr is not None
        sender_err = sender.stderr.read()
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
    assert receiver.returncode == 130, err
    said = f"interrupted: stream cut after {len(data)} verified bytes"
    assert said.encode() in err, err
    assert sender.returncode != 0
    assert out.read_bytes() == data
    # The receiver's count, inside OTR, and its reason.
    assert f"stream cut after {len(data)} verified bytes".encode() in sender_err, (
        sender_err
    )
    assert b"the receiver stopped" in sender_err, sender_err
    assert b"reset" not in sender_err, sender_err


def send_until_received(sender: subprocess.Popen[bytes], out: Path) -> bytes:
    """Write data to the sender's standard input (left open: live, so all
    of it goes out) until the receiver wrote all of it to ``out``."""
    assert sender.stdin is not None
    data = os.urandom(300_000)
    sender.stdin.write(data)
    sender.stdin.flush()
    deadline = time.monotonic() + 30
    while not out.exists() or out.stat().st_size < len(data):
        assert time.monotonic() < deadline, "no data reached the receiver"
        time.sleep(0.05)
    return data
