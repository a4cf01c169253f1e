"""What peers send besides the files xfer takes, and what a flood of it costs.

A receiver hears from peers in ways that are not an xfer offer: text inside
an OTR conversation, and files offered without xfer's end-to-end
encryption (a plain XEP-0234 Jingle offer, a legacy XEP-0096 stream
initiation), which it refuses (``spec/jingle.md`` 5.7). Each becomes a
*notice*, so that nothing a peer sends is dropped unseen:

* :class:`PeerMessage`: text that came inside OTR;
* :class:`RefusedOffer`: a file offered unencrypted, and refused.

Every field but ``fingerprint`` and ``trusted`` is the peer's (or its
server's) choice and hostile: show it through :func:`xfer.display.shown`.

Anyone can send these, and a hostile server can send them from any number
of made-up accounts, so :class:`RateLimit` bounds how many reach the
application: a few at once and then one every few seconds per account, and
a few dozen at once and then one a second in all; it remembers a bounded
number of accounts. What it holds back is counted, and the next notice
that account gets through says how many (``suppressed``). Pure: no I/O;
the caller passes the time.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from xfer.jid import strip_resource

__all__ = [
    "MAX_PEERS",
    "MAX_TEXT",
    "PEER_BURST",
    "PEER_EVERY",
    "TOTAL_BURST",
    "TOTAL_EVERY",
    "VIA_JINGLE",
    "VIA_SI",
    "Notice",
    "PeerMessage",
    "RateLimit",
    "RefusedOffer",
    "cut_text",
]

#: The characters of an OTR message a notice keeps (an OTR message may be
#: some 190 000): the rest is cut, and ``cut`` says so.
MAX_TEXT = 4096
#: Notices one account (any resource) may send at once...
PEER_BURST = 8
#: ...and then one every this many seconds.
PEER_EVERY = 5.0
#: Notices from all accounts at once (a server can make up accounts)...
TOTAL_BURST = 32
#: ...and then one every this many seconds.
TOTAL_EVERY = 1.0
#: Accounts whose budget is remembered; the least recently heard is forgotten.
MAX_PEERS = 256

#: :attr:`RefusedOffer.via`: a Jingle (XEP-0234) session-initiate without
#: xfer's ``<encrypted/>``.
VIA_JINGLE = "jingle"
#: :attr:`RefusedOffer.via`: a stream-initiation (XEP-0095/XEP-0096) offer.
VIA_SI = "si"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerMessage:
    """Text a peer sent inside an OTR conversation.

    ``fingerprint`` is that of the OTR session that carried it, ``trusted``
    whether the trust store trusts it for ``peer``: an untrusted peer's
    text is still private, but it can be anyone.
    """

    peer: str
    text: str
    fingerprint: bytes | None
    trusted: bool
    #: The text was longer than :data:`MAX_TEXT` characters and was cut.
    cut: bool = False
    #: Notices from this account held back by the rate limit since its last.
    suppressed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusedOffer:
    """A file a peer offered without xfer's end-to-end encryption, refused.

    ``name`` and ``size`` are what the offer said (None if it said nothing
    usable); they crossed the servers in the clear. ``via`` is
    :data:`VIA_JINGLE` or :data:`VIA_SI`; ``reason`` the text the peer was
    answered with.
    """

    peer: str
    name: str | None
    size: int | None
    via: str
    reason: str
    #: Notices from this account held back by the rate limit since its last.
    suppressed: int = 0


#: What :meth:`xfer.Client.next_notice` returns.
Notice = PeerMessage | RefusedOffer


def cut_text(text: str) -> tuple[str, bool]:
    """``text`` cut to :data:`MAX_TEXT` characters, and whether it was."""
    return (text[:MAX_TEXT], True) if len(text) > MAX_TEXT else (text, False)


class _Bucket:
    """A token bucket: ``burst`` at once, then one every ``every`` seconds."""

    __slots__ = ("at", "suppressed", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.at = now
        self.suppressed = 0

    def refill(self, burst: float, every: float, now: float) -> None:
        if now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) / every)
        self.at = now


class RateLimit:
    """Which notices reach the application (see the module's documentation).

    Memory is bounded: one small record per account, for at most
    ``max_peers`` accounts.
    """

    def __init__(
        self,
        *,
        peer_burst: int = PEER_BURST,
        peer_every: float = PEER_EVERY,
        total_burst: int = TOTAL_BURST,
        total_every: float = TOTAL_EVERY,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self._peer = (float(peer_burst), peer_every)
        self._total_limit = (float(total_burst), total_every)
        self._max_peers = max_peers
        self._peers: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._total: _Bucket | None = None

    def admit(self, peer: str, now: float) -> int | None:
        """Whether a notice from ``peer`` (a JID) at time ``now`` may pass:
        None if not (it is counted), else how many from the same account
        were held back since the last one that passed (the count restarts).
        """
        key = strip_resource(peer).lower()
        burst, every = self._peer
        bucket = self._peers.get(key)
        if bucket is None:
            bucket = self._peers[key] = _Bucket(burst, now)
            while len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(key)
            bucket.refill(burst, every, now)
        total_burst, total_every = self._total_limit
        if self._total is None:
            self._total = _Bucket(total_burst, now)
        else:
            self._total.refill(total_burst, total_every, now)
        if bucket.tokens < 1 or self._total.tokens < 1:
            bucket.suppressed += 1
            return None
        bucket.tokens -= 1
        self._total.tokens -= 1
        held, bucket.suppressed = bucket.suppressed, 0
        return held
