"""All OTR sessions of one local account: one per (peer full JID, instance tag).

Several logins of one peer (a phone and a laptop) each have their own OTR
instance tag and so their own :class:`~xfer.otr.session.Session`, with its
own keys, counters and SMP state. Messages that carry no tag (plain text,
query messages) go to the peer's *master* session (tag 0), which is where an
AKE we start lives until the peer's reply names its instance; the reply's
instance then takes that AKE over (as libotr does with its master and child
contexts), and the master forgets it: one commit of ours is continued by one
instance only, so a second "instance" answering the same commit (anyone can
claim any tag) finds nothing to continue.

Limits
------
The XMPP servers can send us any message "from" any full JID, so everything
a peer can make us keep is bounded (:class:`Limits`): sessions per bare JID
and in all, characters of partial fragmented messages across all sessions,
and how long a session may stay idle. Time is passed in: ``receive(...,
now=)`` records activity, and :meth:`Account.expire` (which the adapter calls
now and then with the current time) drops idle sessions. A session is never
dropped or evicted for a newcomer while ENCRYPTED, except by expiry after
``Limits.idle_encrypted``.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.jid import bare_jid, strip_resource
from xfer.otr import events as ev
from xfer.otr.ake import AuthState
from xfer.otr.fragments import FragmentBudget, parse_fragment
from xfer.otr.messages import (
    ENCODED_PREFIX,
    MIN_INSTANCE_TAG,
    WHITESPACE_BASE,
    DHCommit,
    DHKey,
    Encoded,
    parse_encoded,
)
from xfer.otr.session import MessageState, Policy, Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.crypto import PrivateKey

__all__ = ["Account", "Limits"]

#: Sessions one peer (a bare JID, all its resources and instances) may make
#: us keep.
MAX_INSTANCES_PER_PEER = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What the peers of one account can make it hold.

    Attributes:
        sessions_per_peer: sessions per bare JID (all its full JIDs and
            instance tags, masters included).
        sessions: sessions in all.
        fragment_chars: characters of partial fragmented messages, across
            every session (one message is at most 256 KiB besides).
        idle: seconds after which :meth:`Account.expire` drops a session
            that is not ENCRYPTED.
        idle_encrypted: the same for ENCRYPTED sessions (None: never).
        evict_after: when a limit is reached, a new session from a peer may
            replace the longest idle session that is not ENCRYPTED, if that
            one has been idle at least this long; otherwise it is refused.
    """

    sessions_per_peer: int = MAX_INSTANCES_PER_PEER
    sessions: int = 256
    fragment_chars: int = 4 << 20
    idle: float = 600.0
    idle_encrypted: float | None = 24 * 3600.0
    evict_after: float = 60.0


_Key = tuple[str, int]


class Account:
    """Routes a local account's OTR traffic to per-instance sessions."""

    def __init__(
        self,
        private_key: PrivateKey,
        *,
        our_tag: int,
        policy: Policy | None = None,
        random: Callable[[int], bytes] = os.urandom,
        limits: Limits | None = None,
    ) -> None:
        self.private_key = private_key
        self.our_tag = our_tag
        self.policy = policy or Policy()
        self.limits = limits or Limits()
        self._random = random
        self._sessions: dict[_Key, Session] = {}
        self._secured_order: list[_Key] = []
        #: When each session last received something, or sent something.
        self._active: dict[_Key, float] = {}
        #: The latest time we were told (receive's or expire's ``now``).
        self._now = 0.0
        self._fragments = FragmentBudget(self.limits.fragment_chars)

    def session(self, peer: str, their_tag: int = 0) -> Session:
        """The session with ``peer``'s instance ``their_tag`` (0: the master).

        Our own user asks for this one, so it is made even when the limits
        are reached (an idle session may make room for it).
        """
        return self._session(peer, their_tag, refuse=False)

    def _session(self, peer: str, their_tag: int, *, refuse: bool) -> Session:
        key = (peer, their_tag)
        found = self._sessions.get(key)
        if found is not None:
            return found
        self._make_room(peer, refuse=refuse)
        created = Session(
            self.private_key,
            our_tag=self.our_tag,
            their_tag=their_tag,
            policy=self.policy,
            random=self._random,
            fragment_budget=self._fragments,
        )
        self._sessions[key] = created
        self._active[key] = self._now
        return created

    def _make_room(self, peer: str, *, refuse: bool) -> None:
        """Evict or refuse, so that one more session for ``peer`` fits.

        Raises:
            RemoteProtocolError: ``refuse`` and a limit is reached with no
                session idle enough to replace.
        """
        limits = self.limits
        bare = _bare(peer)
        same = [k for k in self._sessions if _bare(k[0]) == bare]
        if len(same) >= limits.sessions_per_peer and not self._evict(same):
            if refuse:
                raise RemoteProtocolError("too many OTR instances for one peer")
            return
        full = len(self._sessions) >= limits.sessions
        if full and not self._evict(list(self._sessions)) and refuse:
            raise RemoteProtocolError("too many OTR sessions")

    def _evict(self, keys: list[_Key]) -> bool:
        """Drop the longest idle of ``keys`` that is not ENCRYPTED, if it has
        been idle for ``evict_after``; return whether one was dropped."""
        candidates = [
            k for k in keys if self._sessions[k].state is not MessageState.ENCRYPTED
        ]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda k: self._active[k])
        if self._now - self._active[oldest] < self.limits.evict_after:
            return False
        self._drop(oldest)
        return True

    def _drop(self, key: _Key) -> None:
        self._sessions.pop(key).release()
        del self._active[key]
        if key in self._secured_order:
            self._secured_order.remove(key)

    def sessions(self, peer: str) -> list[Session]:
        return [s for (p, _), s in self._sessions.items() if p == peer]

    def best(self, peer: str) -> Session | None:
        """The peer instance that most recently went secure and still is."""
        for key in reversed(self._secured_order):
            s = self._sessions.get(key)
            if key[0] == peer and s is not None and s.state is MessageState.ENCRYPTED:
                return s
        return None

    def forget(self, peer: str) -> int:
        """Drop every session with ``peer`` (its client went away, and with it
        the other half of their state); return how many."""
        keys = [key for key in self._sessions if key[0] == peer]
        for key in keys:
            self._drop(key)
        return len(keys)

    def expire(self, now: float) -> int:
        """Drop sessions idle for longer than the limits allow; return how many.

        The adapter calls this now and then (every minute, say) with the
        current time, on the same clock as ``receive``'s ``now``. Sessions
        that are not ENCRYPTED go after ``Limits.idle`` seconds without
        traffic, ENCRYPTED ones after ``Limits.idle_encrypted``.
        """
        self._now = max(self._now, now)
        limits = self.limits
        stale = []
        for key, s in self._sessions.items():
            idle = now - self._active[key]
            if s.state is MessageState.ENCRYPTED:
                if limits.idle_encrypted is not None and idle > limits.idle_encrypted:
                    stale.append(key)
            elif idle > limits.idle:
                stale.append(key)
        for key in stale:
            self._drop(key)
        return len(stale)

    def peers(self) -> set[str]:
        """Every peer we have a session with, whatever its state."""
        return {peer for peer, _ in self._sessions}

    def secure_sessions(self) -> list[tuple[str, Session]]:
        """(peer, session) for every ENCRYPTED session, most recent first."""
        out = []
        for key in reversed(self._secured_order):
            s = self._sessions.get(key)
            if s is not None and s.state is MessageState.ENCRYPTED:
                out.append((key[0], s))
        return out

    def receive(
        self, peer: str, text: str, *, now: float | None = None
    ) -> tuple[Session, list[ev.Event]]:
        """Route one body from ``peer`` to its session; return it and the events.

        ``now`` is the current time (seconds, the clock :meth:`expire` is
        given); it marks the session active. Without it, the latest time
        given is used.

        Raises:
            RemoteProtocolError: as :meth:`Session.receive`; or a new session
                would exceed :class:`Limits` (the message is then dropped).
        """
        if now is not None:
            self._now = max(self._now, now)
        tag, message = _sender(text)
        target = self._session(peer, tag, refuse=True)
        if tag:
            self._take_over_master_ake(peer, target, message)
        self._active[peer, target.their_tag] = self._now
        before = target.state
        events = target.receive(
            text, peer_encrypted=self._tagged_while_secure(peer, text)
        )
        if target.state is MessageState.ENCRYPTED and (
            before is not MessageState.ENCRYPTED
            or any(isinstance(e, ev.GoneSecure) for e in events)
        ):
            key = (peer, target.their_tag)
            if key in self._secured_order:
                self._secured_order.remove(key)
            self._secured_order.append(key)
        return target, events

    def _tagged_while_secure(self, peer: str, text: str) -> bool:
        """Whether ``text`` is plain text with a whitespace tag, and a
        session with ``peer`` is ENCRYPTED (the tag then starts no AKE)."""
        if text.startswith("?OTR") or WHITESPACE_BASE not in text:
            return False
        return any(s.state is MessageState.ENCRYPTED for s in self.sessions(peer))

    def _take_over_master_ake(
        self, peer: str, target: Session, message: Encoded | None
    ) -> None:
        """Let the instance session ``target`` continue the master's AKE.

        Our master session (tag 0) sent a D-H Commit before the peer's
        instance tag was known. The first D-H Key that answers it, addressed
        to us, comes from the instance that continues that AKE; a D-H Commit
        of the instance's own means both sides started, and the
        simultaneous-commit rule applies in the instance's session. Either
        way the instance takes the AKE over only if its own session has none
        under way, and the master then forgets it: a second instance
        answering the same commit finds nothing to continue, and its D-H
        Key is ignored.
        """
        master = self._sessions.get((peer, 0))
        if (
            master is None
            or master is target
            or master.ake.state is not AuthState.AWAITING_DHKEY
            or target.ake.state is not AuthState.NONE
        ):
            return
        answers = isinstance(message, DHKey) and message.receiver_tag == self.our_tag
        if not (answers or isinstance(message, DHCommit)):
            return
        # Handlers replace the AKE's state, never mutate it, so the master's
        # AKE object can move to the instance whole.
        target.ake = master.ake
        target.ake.their_tag = target.their_tag
        master.clear_ake()

    def data_to_send(self) -> list[tuple[str, str]]:
        """Every queued (peer, body), from all sessions."""
        out: list[tuple[str, str]] = []
        for key, s in self._sessions.items():
            queued = s.data_to_send()
            if queued:
                self._active[key] = self._now
            out.extend((key[0], text) for text in queued)
        return out


def _bare(peer: str) -> str:
    """The peer whose sessions are counted together: the normalised bare JID,
    or (an address that is not a JID, from the wire) its lower-cased text
    without the resource, so that a bad address is bounded too."""
    try:
        return bare_jid(peer)
    except LocalProtocolError:
        return strip_resource(peer).lower()


#: An AKE message worth parsing twice (once here, once in its session) is
#: short: a D-H Commit or D-H Key is well under this many characters.
_MAX_AKE_TEXT = 1024
_HEADER_CHARS = 16  # base64 of the 12 bytes: version, type, sender, receiver


def _sender(text: str) -> tuple[int, Encoded | None]:
    """The sender instance tag a body names (0 if it names none), and the
    message itself if it is a D-H Commit or D-H Key.

    Only the header of other encoded messages is decoded here: the session
    parses the whole, and a long message is not worth decoding twice.
    """
    try:
        if text.startswith("?OTR|"):
            return parse_fragment(text).sender_tag, None
        if not text.startswith(ENCODED_PREFIX):
            return 0, None
        head = text[len(ENCODED_PREFIX) :][:_HEADER_CHARS]
        raw = base64.b64decode(head, validate=True)
        if len(raw) < 11 or raw[:2] != b"\x00\x03":
            return 0, None
        sender = int.from_bytes(raw[3:7], "big")
        if raw[2] not in (DHCommit.TYPE, DHKey.TYPE) or len(text) > _MAX_AKE_TEXT:
            return (sender if sender >= MIN_INSTANCE_TAG else 0), None
        message = parse_encoded(text)
    except (RemoteProtocolError, binascii.Error, ValueError):
        return 0, None  # the master session will report the error
    return message.sender_tag, message
