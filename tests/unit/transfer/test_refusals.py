"""The budget of refusals a sharer sends (xfer/transfer/refusals.py)."""

from __future__ import annotations

import pytest

from xfer.transfer.refusals import Refusal, RefusalLimit


def run(limit: RefusalLimit, account: str, n: int, now: float) -> list[Refusal]:
    return [limit.refusal(account, now) for _ in range(n)]


def test_a_flood_gets_its_budget_then_silence_marked_once() -> None:
    limit = RefusalLimit(per_window=10, window=60.0)
    got = run(limit, "mallory@example.org", 1000, 0.0)
    assert got[:10] == [Refusal.SEND] * 10
    assert got[10] is Refusal.FIRST_DROPPED
    assert set(got[11:]) == {Refusal.DROPPED}


def test_the_budget_comes_back_at_its_rate_and_the_mark_with_it() -> None:
    limit = RefusalLimit(per_window=10, window=60.0)
    run(limit, "m@example.org", 20, 0.0)
    assert limit.refusal("m@example.org", 5.0) is Refusal.DROPPED  # < 6 s: none yet
    assert limit.refusal("m@example.org", 6.1) is Refusal.SEND  # one per 6 s
    assert limit.refusal("m@example.org", 6.2) is Refusal.FIRST_DROPPED
    # A long quiet time refills the budget, never beyond it.
    assert run(limit, "m@example.org", 11, 10_000.0) == [Refusal.SEND] * 10 + [
        Refusal.FIRST_DROPPED
    ]


def test_accounts_have_budgets_of_their_own() -> None:
    limit = RefusalLimit(per_window=3, window=60.0)
    run(limit, "a@example.org", 10, 0.0)
    assert run(limit, "b@example.org", 3, 0.0) == [Refusal.SEND] * 3


def test_many_accounts_together_are_held_to_the_overall_budget() -> None:
    limit = RefusalLimit(per_window=10, window=60.0, overall=25)
    sent = sum(
        limit.refusal(f"u{i}@example.org", 0.0) is Refusal.SEND for i in range(100)
    )
    assert sent == 25
    # An account turned away by the overall budget keeps its own.
    assert limit.refusal("u99@example.org", 60.0) is Refusal.SEND


def test_forgotten_accounts_are_bounded() -> None:
    limit = RefusalLimit(per_window=1, window=60.0, overall=10_000, max_accounts=2)
    for name in ("a", "b", "c"):
        assert limit.refusal(f"{name}@x", 0.0) is Refusal.SEND
    # "a" was forgotten (the least recent): a fresh budget; "c" was not.
    assert limit.refusal("a@x", 0.0) is Refusal.SEND
    assert limit.refusal("c@x", 0.0) is Refusal.FIRST_DROPPED


@pytest.mark.parametrize(
    "args", [(0, 60.0, 1, 1), (1, 0.0, 1, 1), (1, 60.0, 0, 1), (1, 60.0, 1, 0)]
)
def test_limits_must_be_positive(args: tuple[int, float, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RefusalLimit(*args)
