"""The notices' rate limit (``xfer/notices.py``): a burst per account and
in all, then a slow refill; what it holds back is counted and reported on
the next notice of the same account; it remembers a bounded number of
accounts."""

from __future__ import annotations

from xfer.notices import (
    MAX_TEXT,
    PEER_BURST,
    PEER_EVERY,
    TOTAL_BURST,
    TOTAL_EVERY,
    RateLimit,
    cut_text,
)


def test_a_burst_per_account_then_one_every_few_seconds() -> None:
    limit = RateLimit()
    passed = [limit.admit("bob@x/phone", 0.0) for _ in range(PEER_BURST + 5)]
    assert passed == [0] * PEER_BURST + [None] * 5
    # The resource does not matter, nor the case: the same account.
    assert limit.admit("BOB@x/laptop", 0.0) is None
    # Some time later, one more, which says how many were held back.
    assert limit.admit("bob@x/phone", PEER_EVERY) == 6
    assert limit.admit("bob@x/phone", PEER_EVERY) is None
    assert limit.admit("bob@x/phone", 2 * PEER_EVERY) == 1


def test_the_refill_never_exceeds_the_burst() -> None:
    limit = RateLimit()
    assert limit.admit("bob@x", 0.0) == 0
    later = 1_000_000.0
    passed = [limit.admit("bob@x", later) for _ in range(PEER_BURST + 1)]
    assert passed == [0] * PEER_BURST + [None]


def test_other_accounts_have_their_own_budget() -> None:
    limit = RateLimit()
    for _ in range(PEER_BURST + 3):
        limit.admit("mallory@evil", 0.0)
    assert limit.admit("bob@x", 0.0) == 0


def test_made_up_accounts_share_the_total() -> None:
    # A server can send from any number of accounts it makes up.
    limit = RateLimit()
    passed = [limit.admit(f"m{i}@evil", 0.0) for i in range(TOTAL_BURST + 100)]
    assert passed.count(0) == TOTAL_BURST
    assert passed[TOTAL_BURST:] == [None] * 100
    # Then about one per TOTAL_EVERY seconds, in all.
    assert limit.admit("bob@x", TOTAL_EVERY) == 0
    assert limit.admit("carol@x", TOTAL_EVERY) is None


def test_only_a_bounded_number_of_accounts_is_remembered() -> None:
    limit = RateLimit(max_peers=4, total_burst=10_000)
    for i in range(1000):
        limit.admit(f"m{i}@evil", float(i))
    assert len(limit._peers) == 4
    assert list(limit._peers) == [f"m{i}@evil" for i in range(996, 1000)]


def test_a_held_back_notice_counts_even_when_the_total_is_spent() -> None:
    limit = RateLimit(peer_burst=10, total_burst=1)
    assert limit.admit("bob@x", 0.0) == 0
    assert limit.admit("bob@x", 0.0) is None  # the total, not bob's budget
    assert limit.admit("bob@x", TOTAL_EVERY) == 1


def test_long_texts_are_cut() -> None:
    assert cut_text("hi") == ("hi", False)
    text, cut = cut_text("x" * (MAX_TEXT + 1))
    assert (len(text), cut) == (MAX_TEXT, True)
    assert cut_text("y" * MAX_TEXT) == ("y" * MAX_TEXT, False)
