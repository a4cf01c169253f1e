"""What the networked commands tell the user: lines on stderr, or JSON events.

Human output (status lines, questions, progress) goes to stderr, so that
stdout stays clean. With ``--json``, stdout carries one JSON object per line
and event (``{"event": "sent", ...}``) for scripts, and stderr only errors.

Neither can carry a raw control character to a terminal: a status line goes
through :func:`xfer.display.shown` as a whole (the commands also escape and cap
each peer-supplied field), and JSON is written with ``ensure_ascii``, so every
control, bidi or other non-ASCII character is a ``\\uXXXX`` escape.
"""

from __future__ import annotations

import json
import sys
import time

import click
from xfer_cli.progress import Progress

from xfer.display import shown

__all__ = ["Output", "json_option", "quiet_option", "quoted"]

quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Only errors on stderr; no progress."
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per event on stdout (for scripts).",
)


def quoted(text: str) -> str:
    """A name as shown in a sentence: quoted, escaped, capped."""
    return f"'{shown(text)}'"


class Output:
    def __init__(self, *, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet = quiet or as_json
        self.as_json = as_json

    def say(self, text: str) -> None:
        """A status line for people (stderr), unless quiet."""
        if not self.quiet:
            click.echo(shown(text, limit=None), err=True)

    def event(self, kind: str, **fields: object) -> None:
        """A JSON event on stdout (only with --json)."""
        if self.as_json:
            record = {"event": kind, "time": round(time.time(), 3), **fields}
            line = json.dumps(record, sort_keys=True, ensure_ascii=True)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def progress(self, label: str) -> Progress:
        return Progress(label, enabled=False if self.quiet else None)
