"""All OTR sessions of one local account: one per (peer full JID, instance tag).

Several logins of one peer (a phone and a laptop) each have their own OTR
instance tag and so their own :class:`~xfer.otr.session.Session`, with its
own keys, counters and SMP state. Messages that carry no tag (plain text,
query messages) go to the peer's *master* session (tag 0), which is where an
AKE we start lives until the peer's reply names its instance; the reply's
instance then gets its own session with a copy of that AKE (as libotr does
with its master and child contexts).
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

from xfer.errors import RemoteProtocolError
from xfer.otr import events as ev
from xfer.otr.ake import AuthState
from xfer.otr.fragments import parse_fragment
from xfer.otr.messages import ENCODED_PREFIX, DHKey, parse_encoded
from xfer.otr.session import MessageState, Policy, Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.crypto import PrivateKey

__all__ = ["Account"]

#: Sessions one peer may make us keep (a bound on what a flood can cost).
MAX_INSTANCES_PER_PEER = 16


class Account:
    """Routes a local account's OTR traffic to per-instance sessions."""

    def __init__(
        self,
        private_key: PrivateKey,
        *,
        our_tag: int,
        policy: Policy | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.private_key = private_key
        self.our_tag = our_tag
        self.policy = policy or Policy()
        self._random = random
        self._sessions: dict[tuple[str, int], Session] = {}
        self._secured_order: list[tuple[str, int]] = []

    def session(self, peer: str, their_tag: int = 0) -> Session:
        """The session with ``peer``'s instance ``their_tag`` (0: the master)."""
        key = (peer, their_tag)
        found = self._sessions.get(key)
        if found is None:
            if sum(1 for p, _ in self._sessions if p == peer) >= MAX_INSTANCES_PER_PEER:
                raise RemoteProtocolError("too many OTR instances for one peer")
            found = Session(
                self.private_key,
                our_tag=self.our_tag,
                their_tag=their_tag,
                policy=self.policy,
                random=self._random,
            )
            self._sessions[key] = found
        return found

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
            del self._sessions[key]
            if key in self._secured_order:
                self._secured_order.remove(key)
        return len(keys)

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

    def receive(self, peer: str, text: str) -> tuple[Session, list[ev.Event]]:
        """Route one body from ``peer`` to its session; return it and the events.

        Raises:
            RemoteProtocolError: as :meth:`Session.receive`.
        """
        tag = _sender_tag(text)
        if tag == 0:
            target = self.session(peer)
        else:
            found = self._sessions.get((peer, tag))
            if found is None:
                target = self._new_instance(peer, tag)
            else:
                target = found
                self._continue_master_ake(peer, target, text)
        before = target.state
        events = target.receive(text)
        if target.state is MessageState.ENCRYPTED and (
            before is not MessageState.ENCRYPTED
            or any(isinstance(e, ev.GoneSecure) for e in events)
        ):
            key = (peer, target.their_tag)
            if key in self._secured_order:
                self._secured_order.remove(key)
            self._secured_order.append(key)
        return target, events

    def _continue_master_ake(self, peer: str, target: Session, text: str) -> None:
        """A D-H Key from a peer instance we already know, while that instance's
        session is idle and our master session sent a D-H Commit: the key
        answers the master's commit (sent to the peer before its instance
        tag was known to it), so the instance takes the master's AKE over,
        exactly as a new instance would (:meth:`_new_instance`)."""
        master = self._sessions.get((peer, 0))
        if (
            master is None
            or master is target
            or master.ake.state is not AuthState.AWAITING_DHKEY
            or target.ake.state is not AuthState.NONE
            or not text.startswith(ENCODED_PREFIX)
        ):
            return
        try:
            message = parse_encoded(text)
        except RemoteProtocolError:
            return
        if isinstance(message, DHKey) and message.receiver_tag == self.our_tag:
            target.ake = copy.copy(master.ake)
            target.ake.their_tag = target.their_tag

    def _new_instance(self, peer: str, tag: int) -> Session:
        created = self.session(peer, tag)
        master = self._sessions.get((peer, 0))
        if master is not None and master.ake.state is AuthState.AWAITING_DHKEY:
            # Most likely the answer to a commit our master session sent: this
            # instance continues that AKE (handlers replace state, never mutate
            # it, so a shallow copy is independent of the master's). If it is a
            # commit of the instance's own, the simultaneous-commit rule applies.
            created.ake = copy.copy(master.ake)
            created.ake.their_tag = tag
        return created

    def data_to_send(self) -> list[tuple[str, str]]:
        """Every queued (peer, body), from all sessions."""
        out: list[tuple[str, str]] = []
        for (peer, _), s in self._sessions.items():
            out.extend((peer, text) for text in s.data_to_send())
        return out


def _sender_tag(text: str) -> int:
    """The sender instance tag a body names, or 0 if it names none."""
    try:
        if text.startswith("?OTR|"):
            return parse_fragment(text).sender_tag
        if text.startswith(ENCODED_PREFIX):
            return parse_encoded(text).sender_tag
    except RemoteProtocolError:
        return 0  # the master session will report the error
    return 0
