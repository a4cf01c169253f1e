"""xfer.aio.eyeballs.race: staggered attempts, the first success wins."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from xfer.aio.eyeballs import Cutoff, race

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Script:
    """Attempts that succeed, fail or hang as told, recording when each
    started (when the race called it: its task runs a moment later) and
    what was discarded."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.discarded: list[str] = []
        self.cancelled: list[int] = []
        self.cancelled_at: dict[int, float] = {}

    def attempt(
        self, index: int, *, after: float = 0.0, result: str | None = None,
        error: BaseException | None = None, ignore_cancel: bool = False,
    ) -> Callable[[], Awaitable[str]]:  # fmt: skip
        async def run() -> str:
            try:
                await asyncio.sleep(after)
            except asyncio.CancelledError:
                self.cancelled.append(index)
                self.cancelled_at[index] = asyncio.get_running_loop().time()
                if not ignore_cancel:
                    raise
            if error is not None:
                raise error
            return result if result is not None else f"conn{index}"

        def start() -> Awaitable[str]:
            self.started[index] = asyncio.get_running_loop().time()
            return run()

        return start


async def test_the_first_attempt_wins_alone_when_it_is_quick() -> None:
    s = Script()
    outcome = await race(
        [s.attempt(0), s.attempt(1)], discard=s.discarded.append, stagger=5
    )
    assert (outcome.winner, outcome.result) == (0, "conn0")
    assert list(s.started) == [0]  # the next was never needed
    assert outcome.failures == []
    assert outcome.last_failure is None


async def test_a_hanging_attempt_lets_the_next_start_after_the_stagger() -> None:
    s = Script()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    outcome = await race(
        [s.attempt(0, after=60), s.attempt(1)],
        discard=s.discarded.append,
        stagger=0.2,
    )
    assert (outcome.winner, outcome.result) == (1, "conn1")
    # The stagger runs from when the race started the first attempt (not
    # from when that attempt's task first ran, a moment later).
    assert s.started[1] - s.started[0] >= 0.2
    assert s.cancelled == [0]  # the loser is stopped
    assert loop.time() - begun < 30


async def test_a_failure_starts_the_next_at_once() -> None:
    s = Script()
    outcome = await race(
        [s.attempt(0, error=ConnectionRefusedError()), s.attempt(1)],
        discard=s.discarded.append,
        stagger=60,
    )
    assert outcome.winner == 1
    assert s.started[1] - s.started[0] < 30  # not the 60 s stagger
    [(index, error)] = outcome.failures
    assert index == 0
    assert isinstance(error, ConnectionRefusedError)


async def test_all_failing_is_no_winner_with_the_time_of_the_last_failure() -> None:
    s = Script()
    outcome = await race(
        [
            s.attempt(0, after=0.05, error=TimeoutError()),
            s.attempt(1, error=OSError("unreachable")),
        ],
        discard=s.discarded.append,
        stagger=0.01,
    )
    assert outcome.winner is None
    assert outcome.result is None
    assert sorted(i for i, _ in outcome.failures) == [0, 1]
    assert outcome.last_failure is not None
    assert outcome.last_failure >= s.started[0] + 0.05


async def test_no_attempts_is_no_winner() -> None:
    outcome = await race([], discard=print)
    assert outcome.winner is None
    assert outcome.failures == []


async def test_a_loser_that_succeeded_anyway_is_discarded() -> None:
    # The second succeeds while being cancelled (it ignores the cancel, as
    # a connection completing at that moment would): its result is closed.
    s = Script()
    outcome = await race(
        [s.attempt(0, after=0.3), s.attempt(1, after=60, ignore_cancel=True)],
        discard=s.discarded.append,
        stagger=0.1,
    )
    assert outcome.winner == 0
    assert s.discarded == ["conn1"]


async def test_an_unexpected_error_propagates_and_stops_the_rest() -> None:
    s = Script()
    with pytest.raises(KeyError):
        await race(
            [s.attempt(0, after=60), s.attempt(1, error=KeyError("bug"))],
            discard=s.discarded.append,
            stagger=0.01,
            errors=(OSError,),
        )
    assert s.cancelled == [0]


# -- narrowed while it runs (XEP-0260: the peer reported) -------------------------


async def test_a_cutoff_stops_at_once_the_attempts_it_does_not_keep() -> None:
    # 0 and 1 hang; once told that only 1 and 3 may go on, 0 is cancelled,
    # 2 never starts, 3 starts at once (no more stagger) and wins.
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    loop.call_later(
        0.3,
        cutoff.set_result,
        Cutoff(keep=frozenset({1, 3}), grace=60),
    )
    outcome = await race(
        [s.attempt(0, after=60), s.attempt(1, after=60), s.attempt(2),
         s.attempt(3, after=0.1)],
        discard=s.discarded.append, stagger=0.2, cutoff=cutoff,
    )  # fmt: skip
    assert (outcome.winner, outcome.result) == (3, "conn3")
    assert 2 not in s.started
    assert s.cancelled == [0, 1]  # 0 when cut, 1 when 3 won
    assert not outcome.cut


async def test_the_attempts_kept_are_given_up_at_the_cutoffs_deadline() -> None:
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    cutoff.set_result(Cutoff(keep=frozenset({0}), grace=0.2))
    begun = loop.time()
    outcome = await race(
        [s.attempt(0, after=60), s.attempt(1)],
        discard=s.discarded.append,
        stagger=0.05,
        cutoff=cutoff,
    )
    assert outcome.winner is None
    assert outcome.cut
    assert 1 not in s.started  # not kept: never started
    assert s.cancelled == [0]
    assert outcome.last_failure is not None
    assert outcome.last_failure - begun < 30  # not the 60 s attempt


async def test_a_kept_attempt_that_succeeds_within_the_grace_wins() -> None:
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    cutoff.set_result(Cutoff(keep=frozenset({0}), grace=30))
    outcome = await race(
        [s.attempt(0, after=0.1), s.attempt(1, after=60)],
        discard=s.discarded.append,
        stagger=0.01,
        cutoff=cutoff,
    )
    assert (outcome.winner, outcome.cut) == (0, False)
    assert 1 not in s.started


async def test_a_kept_attempt_that_already_ran_its_grace_is_given_up_at_once() -> None:
    # 0 hangs; 1 (kept too) waits for its stagger slot. When the cutoff
    # comes, 0 has run longer than the grace: given up before 1 starts,
    # not kept waiting beside it.
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    loop.call_later(0.3, cutoff.set_result, Cutoff(keep=frozenset({0, 1}), grace=0.1))
    outcome = await race(
        [s.attempt(0, after=60), s.attempt(1, after=0.05)],
        discard=s.discarded.append,
        stagger=60,
        cutoff=cutoff,
    )
    assert (outcome.winner, outcome.cut) == (1, False)
    assert s.cancelled == [0]
    assert s.cancelled_at[0] <= s.started[1]


async def test_keeping_none_ends_the_race_at_once() -> None:
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    loop.call_later(0.1, cutoff.set_result, Cutoff(keep=frozenset(), grace=60))
    outcome = await race(
        [s.attempt(0, after=60)],
        discard=s.discarded.append,
        cutoff=cutoff,
    )
    assert (outcome.winner, outcome.cut) == (None, True)
    assert s.cancelled == [0]


async def test_a_cutoff_cancelled_or_never_set_changes_nothing() -> None:
    s = Script()
    loop = asyncio.get_running_loop()
    cutoff: asyncio.Future[Cutoff] = loop.create_future()
    loop.call_later(0.05, cutoff.cancel)
    outcome = await race(
        [s.attempt(0, after=0.2)], discard=s.discarded.append, cutoff=cutoff
    )
    assert (outcome.winner, outcome.cut) == (0, False)
    pending: asyncio.Future[Cutoff] = loop.create_future()
    outcome = await race(
        [s.attempt(1, error=OSError())], discard=s.discarded.append, cutoff=pending
    )
    assert (outcome.winner, outcome.cut) == (None, False)
    assert not pending.done()
