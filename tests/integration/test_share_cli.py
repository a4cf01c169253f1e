"""'xfer share' in one process, 'xfer ls' and 'xfer get' in others: real
processes, a real Prosody, real OTR."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_cli_e2e import Person
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.integration


def wait_sharing(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    assert json.loads(line)["event"] == "sharing"


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return proc.returncode, out, err


def test_share_ls_get_on_the_command_line(prosody: LocalProsody, tmp_path: Path):
    alice = Person("alice", prosody, tmp_path)
    bob = Person("bob", prosody, tmp_path)
    carol = Person("carol", prosody, tmp_path)
    for one, other in ((alice, bob), (bob, alice), (alice, carol), (carol, alice)):
        one.trusts(other)
    photos = tmp_path / "photos"
    (photos / "2024" / "summer").mkdir(parents=True)
    (photos / "2024" / "summer" / "beach.jpg").write_bytes(os.urandom(200_000))
    (photos / "2024" / "notes.txt").write_text("hello\n")
    (photos / "2023.txt").write_text("old\n")
    (photos / ".secret").write_text("no\n")
    (photos / "2024" / "link").symlink_to("/etc/passwd")
    sharer = alice.start("share", str(photos), "--with", bob.jid, "--json")
    try:
        wait_sharing(sharer)
        listed = bob.run("ls", alice.jid, "--json")
        assert listed.returncode == 0, listed.stderr
        entries = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(e["path"], e["type"]) for e in entries] == [
            ("2023.txt", "file"),
            ("2024", "directory"),
        ]
        assert entries[0]["size"] == 4
        assert entries[0]["media_type"] == "text/plain"
        human = bob.run("ls", f"{alice.jid}/2024/", "-r")
        assert human.returncode == 0, human.stderr
        assert "2024/summer/beach.jpg" in human.stdout
        assert "image/jpeg" in human.stdout
        assert "link" not in human.stdout

        dest = tmp_path / "bob-got"
        got = bob.run("get", alice.jid, "2024/", "--dir", str(dest), "--json")
        assert got.returncode == 0, got.stderr
        received = [
            json.loads(line)
            for line in got.stdout.splitlines()
            if json.loads(line)["event"] == "received"
        ]
        assert sorted(r["path"] for r in received) == [
            "2024/notes.txt",
            "2024/summer/beach.jpg",
        ]
        assert (dest / "2024" / "summer" / "beach.jpg").read_bytes() == (
            photos / "2024" / "summer" / "beach.jpg"
        ).read_bytes()
        assert (dest / "2024" / "notes.txt").read_text() == "hello\n"
        assert not (dest / "2024" / "link").exists()

        # A path that is not shared: refused, exit 1, nothing written.
        missing = bob.run("get", alice.jid, ".secret", "--dir", str(dest))
        assert missing.returncode == 2  # not even asked: not a share path
        gone = bob.run("get", alice.jid, "nothing-here", "--dir", str(dest))
        assert gone.returncode == 1, gone.stderr
        assert "no such file" in gone.stderr
        # carol is trusted, but not on the list: one clear refusal.
        refused = carol.run("ls", alice.jid)
        assert refused.returncode == 6
        assert "not shared with you" in refused.stderr
    finally:
        code, out, err = stop(sharer)
    assert code == 0, err
    kinds = [json.loads(line)["event"] for line in out.splitlines() if line]
    assert "refused" in kinds
    assert "sent" in kinds
    # The listing's hashes are computed in the background: asked again
    # later (a new sharer run keeps them in its cache), they are shown.
    sharer = alice.start("share", str(photos), "--with", bob.jid, "--json")
    try:
        wait_sharing(sharer)
        deadline = time.monotonic() + 20
        while True:
            listed = bob.run("ls", f"{alice.jid}/2024/notes.txt", "--json")
            assert listed.returncode == 0, listed.stderr
            (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
            if entry["sha256"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert entry["sha256"] == (
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        )
    finally:
        stop(sharer)
