"""OTR v3 fragmentation (Protocol-v3, "Fragmentation").

A v3 fragment is the text ``?OTR|%08x|%08x,%05u,%05u,piece,``: sender and
receiver instance tags, the fragment number k and count n (1 <= k <= n <=
65535), a non-empty piece of the encoded message, and a trailing comma.

Reassembly follows the spec's rules: fragment 1 starts a new message;
fragment K+1 of the same n continues it; anything else discards what was
collected. Limits bound the memory one peer can make us hold: each
:class:`Reassembler` holds at most one message of ``max_size`` characters,
and reassemblers that share a :class:`FragmentBudget` (all those of one
account) hold at most the budget's limit between them, however many peers
and instances there are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FRAGMENT_OVERHEAD",
    "Fragment",
    "FragmentBudget",
    "Reassembler",
    "fragment",
    "parse_fragment",
]

#: Characters a v3 fragment adds around its piece (libotr sizes with this).
FRAGMENT_OVERHEAD = len("?OTR|00000000|00000000,00000,00000,,")
MAX_FRAGMENTS = 65535
#: The longest message reassembled: what an encoded message may be
#: (:data:`xfer.otr.messages.MAX_ENCODED`); and so the longest fragment.
MAX_MESSAGE = 256 * 1024
_MAX_FRAGMENT_TEXT = MAX_MESSAGE + FRAGMENT_OVERHEAD + 8

_FRAGMENT = re.compile(
    r"\?OTR\|([0-9a-fA-F]{1,8})\|([0-9a-fA-F]{1,8}),(\d{1,5}),(\d{1,5}),([^,]+),"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fragment:
    sender_tag: int
    receiver_tag: int
    index: int
    count: int
    piece: str


def parse_fragment(text: str) -> Fragment:
    """Parse a v3 fragment.

    Raises:
        RemoteProtocolError: not a well-formed v3 fragment.
    """
    if len(text) > _MAX_FRAGMENT_TEXT:
        raise RemoteProtocolError("OTR fragment is too long")
    match = _FRAGMENT.fullmatch(text.rstrip())
    if match is None:
        raise RemoteProtocolError("malformed OTR fragment")
    sender, receiver, k, n, piece = match.groups()
    index, count = int(k), int(n)
    if not 1 <= index <= count <= MAX_FRAGMENTS:
        raise RemoteProtocolError("OTR fragment numbers out of range")
    return Fragment(
        sender_tag=int(sender, 16),
        receiver_tag=int(receiver, 16),
        index=index,
        count=count,
        piece=piece,
    )


def fragment(
    message: str, max_size: int, *, sender_tag: int, receiver_tag: int
) -> list[str]:
    """Split an encoded message into v3 fragments of at most ``max_size`` chars.

    A message that fits is returned whole.

    Raises:
        LocalProtocolError: ``max_size`` leaves no room for a piece, or the
            message would need more than 65535 fragments.
    """
    if len(message) <= max_size:
        return [message]
    room = max_size - FRAGMENT_OVERHEAD
    if room < 1:
        raise LocalProtocolError(f"fragment size {max_size} is too small")
    pieces = [message[i : i + room] for i in range(0, len(message), room)]
    if len(pieces) > MAX_FRAGMENTS:
        raise LocalProtocolError("message needs too many fragments")
    n = len(pieces)
    return [
        f"?OTR|{sender_tag:08x}|{receiver_tag:08x},{k:05d},{n:05d},{piece},"
        for k, piece in enumerate(pieces, start=1)
    ]


class FragmentBudget:
    """Characters of partial messages that several reassemblers may hold.

    Args:
        limit: the most characters held at once, across all of them.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Reassembler:
    """Collects the fragments of one peer instance into whole messages.

    Args:
        max_size: the most characters a reassembled message may have.
        budget: shared with other reassemblers (an account's); ``None`` for
            one of this reassembler's own, of ``max_size``.
    """

    def __init__(
        self, *, max_size: int = MAX_MESSAGE, budget: FragmentBudget | None = None
    ) -> None:
        self.max_size = max_size
        self.budget = budget if budget is not None else FragmentBudget(max_size)
        self._pieces: list[str] = []
        self._count = 0
        self._size = 0

    @property
    def held(self) -> int:
        """Characters of the partial message held now."""
        return self._size

    def reset(self) -> None:
        """Discard the partial message and give its room back to the budget."""
        self.budget.used -= self._size
        self._pieces.clear()
        self._count = 0
        self._size = 0

    def add(self, frag: Fragment) -> str | None:
        """Take a fragment; return the whole message once it is complete.

        Out-of-sequence fragments discard the partial message (as the spec
        says) and return None.

        Raises:
            RemoteProtocolError: the message would exceed ``max_size``, or
                the shared budget is spent; the partial message is discarded.
        """
        if frag.index == 1:
            self.reset()
            self._count = frag.count
        elif frag.count != self._count or frag.index != len(self._pieces) + 1:
            self.reset()
            return None
        size = len(frag.piece)
        if self._size + size > self.max_size:
            self.reset()
            raise RemoteProtocolError("reassembled OTR message is too long")
        if self.budget.used + size > self.budget.limit:
            self.reset()
            raise RemoteProtocolError("no room left for OTR fragments")
        self._size += size
        self.budget.used += size
        self._pieces.append(frag.piece)
        if len(self._pieces) == self._count:
            whole = "".join(self._pieces)
            self.reset()
            return whole
        return None
