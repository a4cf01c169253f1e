"""``xfer send --to A --to B ...`` end to end: real processes, a real Prosody."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from xfer_cli.main import EXIT_PARTIAL, EXIT_PEER, EXIT_REFUSED

from tests.integration.test_cli_e2e import Person, events, finish, wait_ready
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.integration


def test_two_files_to_three_one_declines_one_offline(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    alice, bob, carol, dave = (
        Person(n, prosody, tmp_path) for n in ("alice", "bob", "carol", "dave")
    )
    for other in (bob, carol, dave):  # dave is trusted, but never online
        alice.trusts(other)
    for other in (bob, carol):
        other.trusts(alice)
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    one.write_bytes(os.urandom(300_000))
    two.write_bytes(os.urandom(2_000_000))
    bob_in, carol_in = tmp_path / "bob-in", tmp_path / "carol-in"
    bob_rx = bob.start("receive", "--yes", "--dir", str(bob_in), "--json")
    carol_rx = carol.start(
        "receive", "--once", "--dir", str(carol_in), "--json", stdin="n\n"
    )
    try:
        wait_ready(bob_rx)
        wait_ready(carol_rx)
        sent = alice.run(
            "send",
            str(one),
            str(two),
            *("--to", bob.jid, "--to", carol.jid, "--to", dave.jid),
            "--json",
            timeout=120,
        )
    finally:
        bob_out, _ = finish(bob_rx, received=2)
        finish(carol_rx)
    assert sent.returncode == EXIT_PARTIAL, sent.stderr
    got = events(sent.stdout)
    delivered = sorted(
        (str(e["name"]), str(e["peer"]).split("/")[0])
        for e in got
        if e["event"] == "sent"
    )
    assert delivered == [("one.bin", bob.jid), ("two.bin", bob.jid)]
    failed = {str(e["peer"]): e for e in got if e["event"] == "failed"}
    assert set(failed) == {carol.jid, dave.jid}
    # Each failed once, on the first file, and got no further offers.
    assert {e["name"] for e in failed.values()} == {"one.bin"}
    assert failed[carol.jid]["exit_code"] == EXIT_REFUSED
    assert failed[dave.jid]["exit_code"] == EXIT_PEER
    summary = got[-1]
    assert summary["event"] == "summary"
    assert summary["complete"] == [bob.jid]
    assert set(summary["incomplete"]) == {carol.jid, dave.jid}  # type: ignore[arg-type]
    assert (bob_in / "one.bin").read_bytes() == one.read_bytes()
    assert (bob_in / "two.bin").read_bytes() == two.read_bytes()
    assert not carol_in.exists() or list(carol_in.iterdir()) == []
    assert len([e for e in events(bob_out) if e["event"] == "received"]) == 2


def test_all_recipients_get_everything_exit_zero(
    prosody: LocalProsody, tmp_path: Path
) -> None:
    alice, bob, carol = (
        Person(n, prosody, tmp_path) for n in ("alice", "bob", "carol")
    )
    for other in (bob, carol):
        alice.trusts(other)
        other.trusts(alice)
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1_500_000))
    procs = {
        p.name: p.start("receive", "--yes", "--dir", str(tmp_path / p.name), "--json")
        for p in (bob, carol)
    }
    try:
        for proc in procs.values():
            wait_ready(proc)
        sent = alice.run("send", str(src), "--to", bob.jid, "--to", carol.jid, "--json")
    finally:
        for proc in procs.values():
            finish(proc, received=1)
    assert sent.returncode == 0, sent.stderr
    summary = events(sent.stdout)[-1]
    assert sorted(summary["complete"]) == [bob.jid, carol.jid]  # type: ignore[arg-type]
    assert summary["incomplete"] == {}
    for name in procs:
        assert (tmp_path / name / "f.bin").read_bytes() == src.read_bytes()
