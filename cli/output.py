"""What the networked commands tell the user: lines on stderr, or JSON events.

Human output (status lines, questions, progress) goes to stderr, so that
stdout stays clean. With ``--json``, stdout carries one JSON object per line
and event (``{"event": "sent", ...}``) for scripts, and stderr only errors.
"""

from __future__ import annotations

import json
import sys
import time

import click
from xfer_cli.progress import Progress

__all__ = ["Output"]


class Output:
    def __init__(self, *, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet = quiet or as_json
        self.as_json = as_json

    def say(self, text: str) -> None:
        """A status line for people (stderr), unless quiet."""
        if not self.quiet:
            click.echo(text, err=True)

    def event(self, kind: str, **fields: object) -> None:
        """A JSON event on stdout (only with --json)."""
        if self.as_json:
            record = {"event": kind, "time": round(time.time(), 3), **fields}
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
            sys.stdout.flush()

    def progress(self, label: str) -> Progress:
        return Progress(label, enabled=False if self.quiet else None)
