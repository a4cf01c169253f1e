"""XEP-0260 (Jingle SOCKS5 transport) candidate policy, sans-I/O.

Each side offers candidates (its own streamhost, the server's proxy...) with
a priority ``2**16 * type preference + local preference`` (type preferences:
direct 126, assisted 120, tunnel 110, proxy 10), and tries the *peer's*
candidates from the highest priority down. Each then reports the peer's
candidate it reached (candidate-used) or that none worked (candidate-error),
and :func:`nominate` applies XEP-0260's rules:

1. both failed: SOCKS5 failed, fall back (transport-replace to IBB);
2. one side reached a candidate: that one;
3. both did, different priorities: the higher one;
4. both did, equal priorities: the initiator's choice.

A nominated proxy candidate must be activated by the side that offered it.
The SOCKS5 address of a candidate names its offerer first:
``SHA-1(transport sid + offerer JID + other JID)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from xfer.errors import LocalProtocolError
from xfer.framing.socks5 import dst_addr

__all__ = [
    "Candidate",
    "CandidateType",
    "Nomination",
    "connect_order",
    "nominate",
    "priority",
]

MAX_LOCAL_PREFERENCE = 65535


class CandidateType(enum.Enum):
    """Candidate types and their type preferences (XEP-0260 section 2.2)."""

    DIRECT = 126
    ASSISTED = 120
    TUNNEL = 110
    PROXY = 10

    @property
    def label(self) -> str:
        return self.name.lower()


def priority(kind: CandidateType, local_preference: int = 0) -> int:
    """``2**16 * type preference + local preference``."""
    if not 0 <= local_preference <= MAX_LOCAL_PREFERENCE:
        raise LocalProtocolError("a local preference is 0 to 65535")
    return (kind.value << 16) + local_preference


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One ``<candidate/>``: a streamhost and who offered it."""

    cid: str
    host: str
    port: int
    jid: str
    priority: int
    type: CandidateType = CandidateType.DIRECT


def connect_order(candidates: list[Candidate]) -> list[Candidate]:
    """The peer's candidates in the order to try them: highest priority first."""
    return sorted(candidates, key=lambda c: -c.priority)


@dataclass(frozen=True, slots=True, kw_only=True)
class Nomination:
    """The candidate both sides will use."""

    candidate: Candidate
    #: True if the candidate is one we offered (the peer connected to it).
    ours: bool

    @property
    def we_activate(self) -> bool:
        """A proxy is activated by the side that offered it: us."""
        return self.ours and self.candidate.type is CandidateType.PROXY

    @property
    def peer_activates(self) -> bool:
        """The peer offered the proxy: we wait for its ``activated``."""
        return not self.ours and self.candidate.type is CandidateType.PROXY

    def dst_addr(self, transport_sid: str, us: str, peer: str) -> bytes:
        """The SOCKS5 address of the nominated candidate: its offerer first."""
        if self.ours:
            return dst_addr(transport_sid, us, peer)
        return dst_addr(transport_sid, peer, us)


def nominate(
    *,
    we_used: Candidate | None,
    peer_used: Candidate | None,
    we_are_initiator: bool,
) -> Nomination | None:
    """Apply XEP-0260's selection rules; None means fall back to another transport.

    Args:
        we_used: the peer's candidate we reached (our candidate-used), or None.
        peer_used: our candidate the peer reached (its candidate-used), or None.
        we_are_initiator: our role in the Jingle session.
    """
    if we_used is None and peer_used is None:
        return None
    if peer_used is None:
        assert we_used is not None
        return Nomination(candidate=we_used, ours=False)
    if we_used is None:
        return Nomination(candidate=peer_used, ours=True)
    if we_used.priority != peer_used.priority:
        if we_used.priority > peer_used.priority:
            return Nomination(candidate=we_used, ours=False)
        return Nomination(candidate=peer_used, ours=True)
    # Equal priorities: the initiator's choice (the candidate it reached) wins.
    if we_are_initiator:
        return Nomination(candidate=we_used, ours=False)
    return Nomination(candidate=peer_used, ours=True)
