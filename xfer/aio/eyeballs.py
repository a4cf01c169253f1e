"""Trying several connections at once, staggered ("happy eyeballs").

RFC 8305 connects to the addresses of one host in turn, starting the next
attempt when the one before fails or has not succeeded within a short delay,
and keeps the first connection that succeeds. :func:`race` does the same for
any list of attempts (XEP-0260: the peer's candidates, best first): a dead
candidate costs at most the stagger delay before the next is tried, not a
whole connect timeout, and a failing one (refused, unreachable) none.

A race can be narrowed while it runs (a :class:`Cutoff`): XEP-0260 once the
peer reported the candidate it reached, when only some of ours could still
beat it, and only for a short grace.
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
    others are cancelled or never started, and those kept are given up at
    loop time ``until``."""

    keep: frozenset[int]
    until: float


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
    started, last_start = 0, 0.0
    limit: Cutoff | None = None
    try:
        while started < len(attempts) or running:
            if limit is None and cutoff is not None and cutoff.done():
                limit = None if cutoff.cancelled() else cutoff.result()
                if limit is not None:
                    await _narrow(running, limit, discard)
            if limit is not None:
                while started < len(attempts) and started not in limit.keep:
                    started += 1
                if loop.time() >= limit.until or not (
                    started < len(attempts) or running
                ):
                    outcome.cut, outcome.last_failure = True, loop.time()
                    break
            due = last_start + stagger - loop.time()
            if started < len(attempts) and (not running or due <= 0):
                running[asyncio.ensure_future(attempts[started]())] = started
                started += 1
                last_start, due = loop.time(), stagger
            wait = due if started < len(attempts) else None
            watched: set[asyncio.Future[Any]] = set(running)
            if limit is not None:
                left = limit.until - loop.time()
                wait = left if wait is None else min(wait, left)
            elif cutoff is not None and not cutoff.done():
                watched.add(cutoff)
            done, _ = await asyncio.wait(
                watched, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            _collect(done - {cutoff}, running, outcome, discard, errors)
            if outcome.winner is not None:
                break
    finally:
        await _cancel(running, discard)
    if outcome.winner is not None:
        outcome.last_failure = None
    return outcome


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
    limit: Cutoff,
    discard: Callable[[_T], object],
) -> None:
    """Cancel the running attempts ``limit`` does not keep."""
    given_up = {t: i for t, i in running.items() if i not in limit.keep}
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
