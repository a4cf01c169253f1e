"""Trying several connections at once, staggered ("happy eyeballs").

RFC 8305 connects to the addresses of one host in turn, starting the next
attempt when the one before fails or has not succeeded within a short delay,
and keeps the first connection that succeeds. :func:`race` does the same for
any list of attempts (XEP-0260: the peer's candidates, best first): a dead
candidate costs at most the stagger delay before the next is tried, not a
whole connect timeout, and a failing one (refused, unreachable) none.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["STAGGER", "Race", "race"]

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
    #: The loop time at which the last attempt failed (when none won).
    last_failure: float | None = None


async def race(
    attempts: Sequence[Callable[[], Awaitable[_T]]],
    *,
    discard: Callable[[_T], object],
    stagger: float = STAGGER,
    errors: tuple[type[BaseException], ...] = (Exception,),
) -> Race[_T]:
    """Run ``attempts`` staggered, in order; the first to succeed wins.

    The next attempt starts ``stagger`` seconds after the last one started,
    or at once when one fails. Once one succeeds, the others are cancelled;
    a result that another attempt produced anyway is handed to ``discard``
    (to close it). An attempt raising one of ``errors`` counts as failed;
    anything else propagates, after every attempt is cancelled.
    """
    loop = asyncio.get_running_loop()
    outcome: Race[_T] = Race()
    running: dict[asyncio.Future[_T], int] = {}
    started, last_start = 0, 0.0
    try:
        while started < len(attempts) or running:
            due = last_start + stagger - loop.time()
            if started < len(attempts) and (not running or due <= 0):
                task: asyncio.Future[_T] = asyncio.ensure_future(attempts[started]())
                running[task] = started
                started += 1
                last_start, due = loop.time(), stagger
            wait = due if started < len(attempts) else None
            done, _ = await asyncio.wait(
                running, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
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
                    outcome.last_failure = loop.time()
                else:
                    raise exc
            if outcome.winner is not None:
                break
    finally:
        await _cancel(running, discard)
    if outcome.winner is not None:
        outcome.last_failure = None
    return outcome


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
