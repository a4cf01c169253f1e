"""Trying several connections at once, staggered ("happy eyeballs").

RFC 8305 connects to the addresses of one host in turn, starting the next
attempt when the one before fails or has not succeeded within a short delay,
and keeps the first connection that succeeds. :func:`race` does the same for
any list of attempts (XEP-0260: the peer's candidates, best first): a dead
candidate costs at most the stagger delay before the next is tried, not a
whole connect timeout, and a failing one (refused, unreachable) none.

A race can be narrowed while it runs (a :class:`Cutoff`): XEP-0260 once the
peer reported the candidate it reached, when only some of ours could still
beat it, and only for a short grace: the attempts not kept stop, and so do
those kept that already ran ``grace`` seconds; the kept ones not yet
started start at once, and the rest are given up when the last started has
run ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["STAGGER", "Cutoff", "Race", "race"]

#: The delay before the next attempt starts while one is still pending (s);
#: RFC 8305 recommends 250 ms.
STAGGER = 0.25

_T = TypeVar("_T")


@dataclass(kw_only=True)
class Race(Generic[_T]):
    """How a :func:`race` went."""

    #: The index of the attempt that won and its result, or None.
    winner: int | None = None
    result: _T | None = None
    #: Each attempt that failed: its index and what it raised.
    failures: list[tuple[int, BaseException]] = field(default_factory=list)
    #: The loop time at which the last attempt failed, or the race was cut
    #: short (when none won).
    last_failure: float | None = None
    #: Whether a :class:`Cutoff` ended the race (attempts were given up).
    cut: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Cutoff:
    """Told during a race: only the attempts in ``keep`` (indices) go on, the
    others are cancelled or never started, and each kept one has ``grace``
    seconds from its start."""

    keep: frozenset[int]
    grace: float


async def race(
    attempts: Sequence[Callable[[], Awaitable[_T]]],
    *,
    discard: Callable[[_T], object],
    stagger: float = STAGGER,
    errors: tuple[type[BaseException], ...] = (Exception,),
    cutoff: asyncio.Future[Cutoff] | None = None,
) -> Race[_T]:
    """Run ``attempts`` staggered, in order; the first to succeed wins.

    The next attempt starts ``stagger`` seconds after the last one started,
    or at once when one fails. Once one succeeds, the others are cancelled;
    a result that another attempt produced anyway is handed to ``discard``
    (to close it). An attempt raising one of ``errors`` counts as failed;
    anything else propagates, after every attempt is cancelled. Once
    ``cutoff`` has a result, the race goes on as it says.
    """
    loop = asyncio.get_running_loop()
    outcome: Race[_T] = Race()
    running: dict[asyncio.Future[_T], int] = {}
    starts: dict[asyncio.Future[_T], float] = {}
    started, last_start = 0, 0.0
    limit: Cutoff | None = None

    def start(index: int) -> None:
        nonlocal last_start
        task = asyncio.ensure_future(attempts[index]())
        running[task], starts[task] = index, loop.time()
        last_start = loop.time()

    try:
        while started < len(attempts) or running:
            watched: set[asyncio.Future[Any]] = set()
            if limit is None and (limit := _told(cutoff)) is not None:
                await _narrow(running, starts, limit, discard)
            if limit is not None:
                # No more staggering: what is left to try is tried now.
                for index in range(started, len(attempts)):
                    if index in limit.keep:
                        start(index)
                started = len(attempts)
                now = loop.time()
                until = max((starts[t] for t in running), default=now) + limit.grace
                if not running or now >= until:
                    outcome.cut, outcome.last_failure = True, now
                    break
                wait: float | None = until - now
            else:
                due = last_start + stagger - loop.time()
                if started < len(attempts) and (not running or due <= 0):
                    start(started)
                    started, due = started + 1, stagger
                wait = due if started < len(attempts) else None
                if cutoff is not None and not cutoff.done():
                    watched.add(cutoff)
            done, _ = await asyncio.wait(
                watched | set(running),
                timeout=wait,
                return_when=asyncio.FIRST_COMPLETED,
            )
            _collect(done - {cutoff}, running, outcome, discard, errors)
            if outcome.winner is not None:
                break
    finally:
        await _cancel(running, discard)
    if outcome.winner is not None:
        outcome.last_failure = None
    return outcome


def _told(cutoff: asyncio.Future[Cutoff] | None) -> Cutoff | None:
    """The cutoff, once it came (a cancelled one never does)."""
    if cutoff is None or not cutoff.done() or cutoff.cancelled():
        return None
    return cutoff.result()


def _collect(
    done: set[asyncio.Future[Any]],
    running: dict[asyncio.Future[_T], int],
    outcome: Race[_T],
    discard: Callable[[_T], object],
    errors: tuple[type[BaseException], ...],
) -> None:
    """Record the attempts that finished: a winner, failures; raise what is
    not one of ``errors``."""
    for finished in done:
        index = running.pop(finished)
        exc = finished.exception()
        if exc is None:
            if outcome.winner is None:
                outcome.winner, outcome.result = index, finished.result()
            else:
                discard(finished.result())
        elif isinstance(exc, errors):
            outcome.failures.append((index, exc))
            outcome.last_failure = asyncio.get_running_loop().time()
        else:
            raise exc


async def _narrow(
    running: dict[asyncio.Future[_T], int],
    starts: dict[asyncio.Future[_T], float],
    limit: Cutoff,
    discard: Callable[[_T], object],
) -> None:
    """Cancel the running attempts ``limit`` does not keep, and those kept
    that already ran their grace."""
    late = asyncio.get_running_loop().time() - limit.grace
    given_up = {
        t: i for t, i in running.items() if i not in limit.keep or starts[t] <= late
    }
    for task in given_up:
        del running[task]
    await _cancel(given_up, discard)


async def _cancel(
    running: dict[asyncio.Future[_T], int], discard: Callable[[_T], object]
) -> None:
    """Cancel the losers; close what one of them made before it heard."""
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
    for task in running:
        if task.cancelled():
            continue
        if task.exception() is None:
            with contextlib.suppress(Exception):
                discard(task.result())
