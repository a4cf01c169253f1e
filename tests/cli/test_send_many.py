"""``xfer send --to A --to B``: progress per recipient (cli/commands/send_many.py)."""

from __future__ import annotations

import io
import json

import pytest
from xfer_cli.commands.send_many import Recipients
from xfer_cli.output import Output


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


PEERS = ["bob@example.org", "carol@example.org", "dave@example.org"]


def test_a_terminal_gets_one_line_per_recipient_redrawn_in_place() -> None:
    stream, clock = io.StringIO(), Clock()
    lines = Recipients(
        Output(), "f.bin", PEERS, total=1000, stream=stream, tty=True, clock=clock
    )
    bob, carol = lines.for_peer(PEERS[0]), lines.for_peer(PEERS[1])
    clock.now = 1.0
    bob(500, 1000)
    first = stream.getvalue()
    assert first.count("\n") == 3  # a block of three lines, no cursor-up yet
    assert "\x1b[3F" not in first
    assert "f.bin to bob@example.org   50%" in first
    assert "f.bin to carol@example.org    0%" in first
    carol(100, 1000)  # within 0.1 s: not drawn again
    assert stream.getvalue() == first
    clock.now = 1.2
    carol(1000, 1000)
    again = stream.getvalue()[len(first) :]
    assert again.startswith("\x1b[3F")  # back to the top of the block
    assert again.count("\n") == 3
    assert "f.bin to carol@example.org  100%" in again
    lines.close()  # the last state, drawn over the block
    assert stream.getvalue().endswith("\n")


def test_a_peer_name_cannot_draw_on_the_terminal() -> None:
    stream, clock = io.StringIO(), Clock()
    evil = "eve\x1b[2J@example.org"
    lines = Recipients(Output(), "f", [evil], stream=stream, tty=True, clock=clock)
    clock.now = 1.0
    lines.for_peer(evil)(1, 2)
    assert "\x1b[2J" not in stream.getvalue()


def test_not_a_terminal_gets_periodic_lines(capsys: pytest.CaptureFixture[str]) -> None:
    stream, clock = io.StringIO(), Clock()
    lines = Recipients(
        Output(),
        "f.bin",
        PEERS,
        total=10_000,
        stream=stream,
        tty=False,
        period=10,
        clock=clock,
    )
    bob = lines.for_peer(PEERS[0])
    for t in range(1, 25):  # a callback per second for 24 s
        clock.now = float(t)
        bob(t * 100, 10_000)
    lines.close()
    assert stream.getvalue() == ""  # no drawing
    err = capsys.readouterr().err.splitlines()
    # Two rounds (at 10 s and 20 s), one line per recipient each.
    assert len(err) == 2 * len(PEERS)
    assert err[0].startswith("f.bin to bob@example.org   10%")
    assert err[3].startswith("f.bin to bob@example.org   20%")
    assert err[4].startswith("f.bin to carol@example.org    0%")


def test_json_gets_progress_events_per_recipient(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    out = Output(as_json=True)
    lines = Recipients(out, "f.bin", PEERS[:2], tty=True, period=5, clock=clock)
    clock.now = 6.0
    lines.for_peer(PEERS[1])(42, 100)
    lines.close()
    captured = capsys.readouterr()
    assert captured.err == ""  # --json is quiet on stderr, terminal or not
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [(e["event"], e["peer"], e["done"], e["total"]) for e in events] == [
        ("progress", PEERS[0], 0, None),
        ("progress", PEERS[1], 42, 100),
    ]
    assert {e["name"] for e in events} == {"f.bin"}


def test_quiet_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    stream, clock = io.StringIO(), Clock()
    out = Output(quiet=True)
    lines = Recipients(out, "f", PEERS, stream=stream, tty=True, period=1, clock=clock)
    for t in range(1, 5):
        clock.now = float(t)
        lines.for_peer(PEERS[0])(t, 10)
    lines.close()
    assert stream.getvalue() == ""
    assert capsys.readouterr() == ("", "")
