"""Progress on stderr: bytes, rate and ETA, redrawn at most ten times a second.

It draws only when stderr is a terminal (and the user did not ask for
``--quiet``); otherwise it is a no-op, so scripts and logs stay clean. The
label is often a peer's file name: it is escaped and capped
(:func:`xfer.display.shown`).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from xfer.display import shown

__all__ = ["Progress", "format_bytes"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _format_eta(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress callback (``done, total``) that draws one status line.

    Args:
        label: what is going on ("encrypting", a file name, ...); shown
            escaped.
        enabled: draw at all; default: when ``stream`` is a terminal.
        stream: where to draw; default stderr.
    """

    def __init__(
        self,
        label: str,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = shown(label)
        self._clock = time.monotonic
        self._start = self._clock()
        self._last_draw = 0.0
        self._drawn = False

    def line(self, done: int, total: int | None, now: float) -> str:
        """The status text for ``done`` of ``total`` bytes at time ``now``."""
        elapsed = max(now - self._start, 1e-9)
        rate = done / elapsed
        parts = [self.label]
        if total:
            parts.append(f"{100 * done / total:3.0f}%")
            parts.append(f"{format_bytes(done)} / {format_bytes(total)}")
        else:
            parts.append(format_bytes(done))
        parts.append(f"{format_bytes(rate)}/s")
        if total and rate > 0 and done < total:
            parts.append(f"ETA {_format_eta((total - done) / rate)}")
        return "  ".join(parts)

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = self._clock()
        finished = total is not None and done >= total
        if not finished and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self.stream.write("\r\x1b[K" + self.line(done, total, now))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the status line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
