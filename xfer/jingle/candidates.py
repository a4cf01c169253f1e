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

Once the peer reported the one of our candidates it reached, a pending try
of one of the peer's can win only with a higher priority (or, equal, if we
are the initiator): :func:`could_win` tells which; XEP-0260 lets a side
stop trying the others and report candidate-error.

A nominated proxy candidate must be activated by the side that offered it.
The SOCKS5 address of a candidate names its offerer first:
``SHA-1(transport sid + offerer JID + other JID)``.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from xfer.errors import LocalProtocolError
from xfer.framing.socks5 import dst_addr

__all__ = [
    "Candidate",
    "CandidateType",
    "Nomination",
    "connect_order",
    "could_win",
    "may_connect",
    "nominate",
    "offer_order",
    "parse_ip",
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


def could_win(
    candidate: Candidate, *, peer_used: Candidate, we_are_initiator: bool
) -> bool:
    """Whether reaching ``candidate`` (one of the peer's) could still get it
    nominated, now that the peer reported reaching ``peer_used`` (ours).

    By :func:`nominate`'s rules 3 and 4: only if its priority is higher, or
    equal and we are the initiator. Otherwise XEP-0260 (section 2.3) lets
    us stop trying it at once, and report candidate-error if none of the
    others worth trying is reached.
    """
    if candidate.priority != peer_used.priority:
        return candidate.priority > peer_used.priority
    return we_are_initiator


# -- which addresses to offer, and which to connect to --------------------------
#
# Our direct candidates are the host's own interface addresses (found by
# xfer.aio.addresses), put in an order the peer then tries them in, and the
# addresses the user adds (a port forward). The rules are here, without I/O:
# what is worth offering and in which order (offer_order), and which address
# a peer's candidate may make us connect to (may_connect).

#: At most this many direct candidates of our own (the wire allows 16 in all).
MAX_DIRECT = 10
#: At most this many proxies (ours first, then the peer's server's).
MAX_PROXIES = 4

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(host: str) -> _IP | None:
    """``host`` as an IP address (an IPv6 scope kept out), or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _unusable(ip: _IP) -> bool:
    """Never a streamhost address: nothing, everyone, or a group."""
    if ip.is_loopback:
        return False  # ::1 sits in a reserved range
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return True  # ::ffff:a.b.c.d is offered (or refused) as a.b.c.d
    return ip == ipaddress.IPv4Address("255.255.255.255")


def offer_order(
    addresses: list[str], *, toward_server: str | None, loopback: bool
) -> list[str]:
    """The interface addresses worth offering, best first.

    The address our XMPP connection leaves from (``toward_server``) comes
    first: it is routed, and likely reachable from the peer's side of the
    server. Then global addresses, then private ones (RFC 1918, unique
    local IPv6), then IPv4 link-local; IPv6 and IPv4 alternate within each
    class (as happy eyeballs does, RFC 8305 section 4). IPv6 link-local
    addresses are left out: their scope is an interface of *this* host,
    meaningless to the peer. Loopback comes last, and only with ``loopback``
    (the peer may be on this host). At most :data:`MAX_DIRECT`.
    """
    seen: dict[str, int] = {}
    for text in addresses:
        ip = parse_ip(text)
        if ip is None or _unusable(ip) or str(ip) in seen:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
            continue
        if ip.is_loopback and not loopback:
            continue
        if ip.is_loopback:
            rank = 4
        elif ip.is_link_local:
            rank = 3
        elif ip.is_private:
            rank = 2
        else:
            rank = 1
        if toward_server is not None and parse_ip(toward_server) == ip:
            rank = 0
        seen[str(ip)] = rank
    by_rank: dict[int, list[str]] = {}
    for text, rank in seen.items():
        by_rank.setdefault(rank, []).append(text)
    ordered: list[str] = []
    for rank in sorted(by_rank):
        six = [a for a in by_rank[rank] if ":" in a]
        four = [a for a in by_rank[rank] if ":" not in a]
        for i in range(max(len(six), len(four))):
            ordered += six[i : i + 1] + four[i : i + 1]
    return ordered[:MAX_DIRECT]


def may_connect(address: str, *, loopback: bool) -> bool:
    """Whether we may connect to ``address`` (an IP address, resolved from
    a peer's candidate) as a streamhost.

    A peer (or a server forging its candidates) picks the hosts and ports we
    connect to, and all we ever send there is a SOCKS5 greeting and, if the
    other end answers as SOCKS5, a CONNECT for a hash (never data before a
    SOCKS5 success). Still, we do not let it point us at this host's own
    services: loopback only when the peer may be on this host
    (``loopback``), never the unspecified address (which reaches this host
    too), broadcast, multicast or reserved ranges, nor an IPv6 link-local
    address without a scope.
    """
    ip = parse_ip(address)
    if ip is None or _unusable(ip):
        return False
    if ip.is_loopback:
        return loopback
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        return "%" in address
    return True
