"""How many refusals a sharer sends (spec/share.md section 5.3): a peer
that floods it with requests must not make it send as many OTR messages
back.

Each refusal is a reply inside OTR, one encryption and one stanza, and
costs the sharer more than the request cost the peer. So refusals are
counted per account (the bare JID: a peer gains nothing by asking from
many resources) in a token bucket: ``per_window`` of them at once, then
one more every ``window / per_window`` seconds. A refusal over budget is
not sent: the request is dropped in silence. All accounts together are
held to ``overall`` refusals per window too, so that many accounts (one
server can make any number) cannot add up to a flood either. The first
refusal dropped for an account after one was sent is marked
(:attr:`Refusal.FIRST_DROPPED`) so the sharer can log it, once.

Sans-I/O: the caller passes the time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["OVERALL", "PER_WINDOW", "WINDOW", "Refusal", "RefusalLimit"]

#: Refusals one account gets at once, and per :data:`WINDOW` seconds.
PER_WINDOW = 10
WINDOW = 60.0
#: Refusals all accounts together get per window.
OVERALL = 100
#: Accounts remembered at most (the least recently refused is forgotten).
MAX_ACCOUNTS = 4096


class Refusal(enum.Enum):
    """What to do with a refusal."""

    SEND = "send"
    #: Dropped: the first since this account was last sent one.
    FIRST_DROPPED = "first-dropped"
    #: Dropped, as the ones before it.
    DROPPED = "dropped"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    dropping: bool = False

    def take(self, capacity: int, rate: float, now: float) -> bool:
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RefusalLimit:
    """Token buckets of refusals: one per account, one for all."""

    def __init__(
        self,
        per_window: int = PER_WINDOW,
        window: float = WINDOW,
        overall: int = OVERALL,
        max_accounts: int = MAX_ACCOUNTS,
    ) -> None:
        if per_window < 1 or overall < 1 or window <= 0 or max_accounts < 1:
            raise ValueError("the limits must be positive")
        self._per_window = per_window
        self._overall = overall
        self._rate = per_window / window
        self._overall_rate = overall / window
        self._max_accounts = max_accounts
        self._accounts: dict[str, _Bucket] = {}
        self._all: _Bucket | None = None

    def refusal(self, account: str, now: float) -> Refusal:
        """Whether to send ``account`` (a bare JID) the refusal it earned
        at ``now`` (seconds, monotonic); counts it if so."""
        bucket = self._accounts.pop(account, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self._per_window), at=now)
        self._accounts[account] = bucket  # the most recent last
        while len(self._accounts) > self._max_accounts:
            del self._accounts[next(iter(self._accounts))]
        if self._all is None:
            self._all = _Bucket(tokens=float(self._overall), at=now)
        # Peek at the account's budget first: a dropped refusal must not
        # spend the shared one.
        if bucket.take(self._per_window, self._rate, now):
            if self._all.take(self._overall, self._overall_rate, now):
                bucket.dropping = False
                return Refusal.SEND
            bucket.tokens += 1.0  # not sent: give it back
        if bucket.dropping:
            return Refusal.DROPPED
        bucket.dropping = True
        return Refusal.FIRST_DROPPED
