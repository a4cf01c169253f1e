"""Peers whose OTR is too old for xfer: told once, remembered a while.

xfer speaks OTR version 3 only, and the extra symmetric key (TLV 8) that
carries every transfer exists only since version 3 (``spec/otr.md`` section
1). A client that offers only version 2 (a query such as ``?OTRv2?`` or
``?OTR?v2?``, a whitespace tag with the version 2 tag alone, a version 2 D-H
Commit) can never exchange a file with xfer, and without an answer its user
sees nothing at all. The engine reports such an offer
(:class:`~xfer.otr.events.VersionUnsupported`); the ``xfer_otr`` plugin asks
:class:`OldClients` whether to say so:

* to the peer, in one plain message (:func:`reply_text`), and to our user
  (the plugin's ``xfer_otr_unsupported`` event, and :meth:`OldClients.next`);
* once per account (bare JID) while it is remembered (:data:`REMEMBER`
  seconds after its last such offer), and at most :data:`MAX_REPLIES` times
  per :data:`REPLY_WINDOW` seconds to everyone together;
* remembering at most :data:`MAX_REMEMBERED` full JIDs (the oldest go
  first), and keeping at most :data:`MAX_NOTICES` notices nobody took.

A sender that waits for an OTR session with such a full JID is told at once
(:meth:`OldClients.known`): it fails with
:class:`~xfer.errors.PeerIncapable`, which names :data:`LACKS`.

Such an offer is plain text, which the servers can forge in anyone's name.
What a forger gains is bounded: one short reply per account and hour, a few a
minute in all, one line for our user, and a sender's wait for that full JID
cut short (a server can drop that peer's messages anyway). It never touches
an OTR session; the plugin ignores it altogether from a full JID with which
an encrypted session is up (that client does speak version 3).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.errors import TransferTimeout
from xfer.jid import strip_resource

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "LACKS",
    "MAX_NOTICES",
    "MAX_REMEMBERED",
    "MAX_REPLIES",
    "REMEMBER",
    "REPLY_WINDOW",
    "OldClients",
    "named_versions",
    "reply_text",
]

#: What such a peer's client lacks, as :class:`~xfer.errors.PeerIncapable`
#: names it.
LACKS = "OTR version 3"
#: Seconds a peer is remembered after its last offer of old versions only.
REMEMBER = 3600.0
#: Full JIDs remembered at most.
MAX_REMEMBERED = 64
#: Replies (and notices to our user) at most per :data:`REPLY_WINDOW`.
MAX_REPLIES = 8
REPLY_WINDOW = 60.0
#: Notices kept for :meth:`OldClients.next` until somebody takes them.
MAX_NOTICES = 8


def named_versions(versions: Iterable[int]) -> str:
    """``{2}`` -> ``'version 2'``; ``{1, 2}`` -> ``'versions 1 and 2'``."""
    ordered = [str(v) for v in sorted(versions)]
    if len(ordered) == 1:
        return f"version {ordered[0]}"
    return f"versions {', '.join(ordered[:-1])} and {ordered[-1]}"


def reply_text(versions: Iterable[int]) -> str:
    """The plain message that tells the peer why nothing happens."""
    return (
        "xfer needs OTR version 3 to exchange files; your client offers only "
        f"{named_versions(versions)}."
    )


@dataclass(frozen=True, slots=True)
class _Seen:
    when: float
    versions: frozenset[int]
    #: Whether its account was told (a reply sent, our user notified).
    told: bool


class OldClients:
    """The peers that recently offered only OTR versions other than 3.

    ``clock`` gives the time in seconds (monotonic).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        remember: float = REMEMBER,
        size: int = MAX_REMEMBERED,
        replies: int = MAX_REPLIES,
        window: float = REPLY_WINDOW,
    ) -> None:
        self._clock = clock
        self._remember = remember
        self._size = size
        self._window = window
        #: Full JID -> what it offered, oldest first.
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._replies: collections.deque[float] = collections.deque(maxlen=replies)
        self._notices: collections.deque[tuple[str, frozenset[int]]] = (
            collections.deque(maxlen=MAX_NOTICES)
        )
        self._noticed = asyncio.Event()

    def offered(self, peer: str, versions: frozenset[int]) -> bool:
        """Note that the full JID ``peer`` offered only ``versions``; whether
        to tell it and our user now (then a notice is queued for
        :meth:`next`)."""
        now = self._clock()
        self._expire(now)
        account = strip_resource(peer).lower()
        told = any(
            seen.told and strip_resource(jid).lower() == account
            for jid, seen in self._seen.items()
        )
        tell = not told and self._budget(now)
        self._seen.pop(peer, None)
        self._seen[peer] = _Seen(now, versions, told or tell)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        if tell:
            self._notices.append((peer, versions))
            self._noticed.set()
        return tell

    def known(self, peer: str) -> frozenset[int] | None:
        """The versions the full JID ``peer`` offered, if it recently offered
        only old ones."""
        self._expire(self._clock())
        seen = self._seen.get(peer)
        return None if seen is None else seen.versions

    def forget(self, peer: str) -> None:
        """The client at the full JID ``peer`` went away."""
        self._seen.pop(peer, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if now - oldest.when < self._remember:
                return
            self._seen.popitem(last=False)

    def _budget(self, now: float) -> bool:
        """Take one reply from the budget of the window, if any is left."""
        if (
            len(self._replies) == self._replies.maxlen
            and now - self._replies[0] < self._window
        ):
            return False
        self._replies.append(now)
        return True

    async def next(self, timeout: float | None = None) -> tuple[str, frozenset[int]]:
        """The next peer told that its OTR is too old: (its full JID, the
        versions it offered).

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not self._notices:
                    self._noticed.clear()
                    await self._noticed.wait()
        except TimeoutError:
            raise TransferTimeout("no peer offered an older OTR") from None
        return self._notices.popleft()
