"""``xfer send PATH... --to A --to B``: the same files to several recipients,
and ``--to ROOM``: to the occupants of a group chat room.

Each recipient gets its own offer under its own keys (``spec/otr.md`` 5.5);
each file is read once for all of them. One recipient that declines, is
offline, untrusted or fails does not stop the others: it gets no further
files, and the summary says who got what.

Exit code: 0 if every recipient got every file; :data:`EXIT_PARTIAL` if some
got all the files and others not; if no recipient got anything, the code of
the first failure (as for one recipient); 7 if a room held no one to send to
(every occupant anonymous to us or untrusted).

Progress: one line per recipient (see :class:`Recipients`).

``--json`` events: ``progress`` (every :data:`PERIOD` seconds, one per
recipient: ``peer``, ``name``, ``done``, ``total``), ``sent`` (one per file
and recipient, as for one recipient), ``failed`` (``peer``, ``name``,
``reason``, ``exit_code``), ``skipped`` (a room's occupant not sent to:
``peer``, ``reason``) and, at the end, ``summary`` (``complete``: the
recipients that got every file; ``incomplete``: the others, each with its
reason).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from xfer_cli.account import connect
from xfer_cli.main import EXIT_OK, EXIT_PARTIAL, EXIT_VERIFY, CommandError, describe
from xfer_cli.output import Output, quoted
from xfer_cli.progress import Progress, format_bytes

from xfer.display import shown

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from xfer.aio.bytestream import ProgressCallback
    from xfer.api import Client
    from xfer.xmpp.transfer import SendResult

__all__ = ["PERIOD", "Recipients", "run_many", "send_to_many", "send_to_targets"]


#: Seconds between the progress lines written when stderr is not a
#: terminal (and between ``progress`` events with ``--json``).
PERIOD = 10.0
#: Seconds between redraws on a terminal, at most.
REDRAW = 0.1


class Recipients:
    """Progress of one file to several recipients, one line each.

    On a terminal (stderr, unless quiet) it redraws a block of one line per
    recipient in place, at most every :data:`REDRAW` seconds. Otherwise it
    writes one line per recipient every ``period`` seconds (not at all if
    quiet), and with ``--json`` a ``progress`` event per recipient
    (``peer``, ``name``, ``done``, ``total``) as often.
    """

    def __init__(
        self,
        out: Output,
        name: str,
        peers: list[str],
        *,
        total: int | None = None,
        period: float = PERIOD,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._name = name
        self._stream = stream if stream is not None else sys.stderr
        if tty is None:
            tty = self._stream.isatty()
        self._draw = tty and not out.quiet
        self._period = period
        self._clock = clock
        self._lines = {
            peer: Progress(f"{name} to {peer}", enabled=False) for peer in peers
        }
        self._done: dict[str, tuple[int, int | None]] = dict.fromkeys(peers, (0, total))
        self._drawn = 0
        self._last = clock()

    def for_peer(self, peer: str) -> ProgressCallback:
        def report(done: int, total: int | None) -> None:
            self._done[peer] = (done, total)
            self._tick(final=False)

        return report

    def _tick(self, *, final: bool) -> None:
        now = self._clock()
        wait = REDRAW if self._draw else self._period
        if not final and now - self._last < wait:
            return
        self._last = now
        if self._draw:
            self._redraw(now)
        elif not final:
            for peer, (done, total) in self._done.items():
                self._out.say(self._lines[peer].line(done, total, now))
                self._out.event(
                    "progress", peer=peer, name=self._name, done=done, total=total
                )

    def _redraw(self, now: float) -> None:
        # A line wider than the terminal would wrap, and moving up by one
        # line per recipient would no longer reach the top of the block.
        width = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)
        text = "".join(
            "\r\x1b[K" + self._lines[peer].line(done, total, now)[:width] + "\n"
            for peer, (done, total) in self._done.items()
        )
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._stream.write(up + text)
        self._stream.flush()
        self._drawn = len(self._done)

    def close(self) -> None:
        """Draw the last state (on a terminal)."""
        if self._draw:
            self._tick(final=True)


async def send_to_many(
    out: Output,
    client: Client,
    peers: list[str],
    files: list[tuple[Path, str]],
    skipped: dict[str, str] | None = None,
) -> int:
    """Send ``files`` to ``peers`` with ``client``; the exit code.
    ``skipped`` (a room's occupants not sent to, with the reason) only
    counts in the summary."""
    for peer, reason in (skipped or {}).items():
        out.say(f"skipping {shown(peer)}: {reason}")
        out.event("skipped", peer=peer, reason=reason)
    active = list(peers)
    why: dict[str, tuple[str, int]] = {}
    started = time.perf_counter()
    total = 0
    for path, as_name in files:
        if not active:
            break
        lines = Recipients(out, as_name, active, total=path.stat().st_size)
        try:
            result = await client.send_file_to_many(
                active, path, name=as_name, progress=lines.for_peer
            )
        finally:
            lines.close()
        total += path.stat().st_size
        for peer, got in result.results.items():
            if isinstance(got, Exception):
                message, code = describe(got)
                why[peer] = (message, code)
                active.remove(peer)
                out.say(f"{quoted(as_name)} not sent to {shown(peer)}: {message}")
                out.event(
                    "failed", name=as_name, peer=peer, reason=message, exit_code=code
                )
            else:
                _sent(out, as_name, got)
    seconds = time.perf_counter() - started
    out.say(
        f"{len(active)} of {len(peers)} recipients got all {len(files)} file(s) "
        f"({format_bytes(total)} each, {seconds:.1f} s)"
        + (f"; not: {', '.join(shown(p) for p in why)}" if why else "")
    )
    out.event(
        "summary",
        complete=active,
        incomplete={p: reason for p, (reason, _) in why.items()},
        skipped=dict(skipped or {}),
    )
    if not why:
        return EXIT_OK
    if active:
        return EXIT_PARTIAL
    return next(iter(why.values()))[1]


def _sent(out: Output, name: str, result: SendResult) -> None:
    rate = result.size / max(result.seconds, 1e-9) / 1e6
    out.say(
        f"sent {quoted(name)} to {shown(result.peer)} "
        f"({format_bytes(result.size)}, {rate:.1f} MB/s): verified by the receiver"
    )
    out.event(
        "sent",
        name=name,
        size=result.size,
        peer=result.peer,
        transport=result.transport,
        via=result.via,
        seconds=round(result.seconds, 3),
        setup_seconds=round(result.setup_seconds, 3),
        breaks=result.breaks,
        resumed_from=result.resumed_from,
        sha256=result.sha256.hex(),
    )


async def send_to_targets(
    out: Output, client: Client, targets: list[str], files: list[tuple[Path, str]]
) -> int:
    """Send ``files`` to ``targets``, each a peer or a group chat room
    (XEP-0045: its occupants whose real JID it shows and whose fingerprint
    we trust; the others are listed as skipped, with the reason); the exit
    code.

    Raises:
        CommandError: no one is left to send to (exit code 7).
    """
    peers: list[str] = []
    skipped: dict[str, str] = {}
    for target in targets:
        if await client.is_room(target):
            found, passed_over = await client.room_recipients(target)
            out.say(
                f"room {shown(target)}: sending to {len(found)} occupant(s), "
                f"skipping {len(passed_over)}"
            )
            peers += found
            skipped.update(passed_over)
        else:
            peers.append(target)
    if not peers:
        for peer, reason in skipped.items():
            out.event("skipped", peer=peer, reason=reason)
        listed = "; ".join(f"{shown(p)}: {r}" for p, r in skipped.items())
        raise CommandError(
            f"no occupant can get the files ({listed})", exit_code=EXIT_VERIFY
        )
    return await send_to_many(out, client, peers, files, skipped)


async def run_many(
    out: Output,
    targets: list[str],
    files: list[tuple[Path, str]],
    connecting: dict[str, Any],
) -> int:
    """Connect (``connecting``: the arguments of :func:`connect`), send to
    ``targets`` (peers and rooms), close; the exit code."""
    client = await connect(**connecting)
    try:
        return await send_to_targets(out, client, targets, files)
    finally:
        await client.close()
