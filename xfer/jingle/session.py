"""One Jingle session (XEP-0166), sans-I/O: every action sent or received is checked.

The adapter calls :meth:`JingleSession.send` before it sends an action and
:meth:`JingleSession.receive` when one arrives (after parsing, before acting
on it). Both move the machine along :data:`~xfer.jingle.states.TRANSITIONS`.
A received action that breaks the rules raises :class:`JingleError`, which
carries the stanza error the adapter must answer with; the machine is then
in the sticky ERROR state, except for ``unknown-session`` (the session had
already ended) and a lost tie-break (the peer's request simply loses).

Besides the states, the session tracks transport-replace: each one must be
answered by the other side with transport-accept or transport-reject for the
same content; if both sides replace the same content at once, the
initiator's request wins (XEP-0166 section 7.2.15 / tie-breaking).
"""

from __future__ import annotations

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.jingle.states import TRANSITIONS, Action, Role, SessionState

__all__ = ["JingleError", "JingleSession"]

_REPLACE_ANSWERS = (Action.TRANSPORT_ACCEPT, Action.TRANSPORT_REJECT)
#: Contents one session may have transport replacements pending for; a peer
#: naming ever new contents cannot make us remember more.
MAX_CONTENTS = 64


class JingleError(RemoteProtocolError):
    """A Jingle request to refuse: ``condition`` is the XMPP stanza error,
    ``jingle_condition`` the ``urn:xmpp:jingle:errors:1`` element, if any."""

    def __init__(
        self, message: str, *, condition: str, jingle_condition: str | None
    ) -> None:
        super().__init__(message)
        self.condition = condition
        self.jingle_condition = jingle_condition


class JingleSession:
    """The state of one session, from our side."""

    def __init__(self, *, sid: str, role: Role) -> None:
        if not sid:
            raise LocalProtocolError("a Jingle session needs a sid")
        self.sid = sid
        self.role = role
        self.state = SessionState.NEW
        #: content name -> who sent the unanswered transport-replace for it.
        self._replacing: dict[str, Role] = {}

    def send(self, action: Action, *, content: str | None = None) -> None:
        """Check and record an action we are about to send.

        Raises:
            LocalProtocolError: the action is not allowed now, or not ours.
        """
        nxt = TRANSITIONS.get((self.state, self.role, action))
        if nxt is None:
            msg = (
                f"cannot send {action.value} as {self.role.value} "
                f"in state {self.state.value}"
            )
            raise LocalProtocolError(msg)
        self._replace_bookkeeping(self.role, action, content, local=True)
        self.state = nxt

    def receive(self, action: Action, *, content: str | None = None) -> None:
        """Check and record an action the peer sent.

        Raises:
            JingleError: with the error to answer; see the module docstring.
        """
        if self.state is SessionState.ENDED:
            raise JingleError(
                f"{action.value} for an ended session",
                condition="item-not-found",
                jingle_condition="unknown-session",
            )
        sender = self.role.other
        nxt = TRANSITIONS.get((self.state, sender, action))
        if nxt is None:
            was, self.state = self.state, SessionState.ERROR
            raise JingleError(
                f"{action.value} from the {sender.value} in state {was.value}",
                condition="unexpected-request",
                jingle_condition="out-of-order",
            )
        self._replace_bookkeeping(sender, action, content, local=False)
        self.state = nxt

    def _replace_bookkeeping(
        self, sender: Role, action: Action, content: str | None, *, local: bool
    ) -> None:
        if action is Action.TRANSPORT_REPLACE:
            if content is None:
                raise self._bad(local, "transport-replace names no content")
            pending = self._replacing.get(content)
            # Both replaced the same content at once: the initiator's wins.
            if pending is Role.INITIATOR and sender is Role.RESPONDER:
                if local:
                    msg = "the peer's transport-replace is pending; answer it first"
                    raise LocalProtocolError(msg)
                raise JingleError(
                    "simultaneous transport-replace: the initiator's wins",
                    condition="conflict",
                    jingle_condition="tie-break",
                )
            if content not in self._replacing and len(self._replacing) >= MAX_CONTENTS:
                raise self._bad(local, "too many transport-replace requests pending")
            self._replacing[content] = sender
        elif action in _REPLACE_ANSWERS:
            if content is None or self._replacing.get(content) is not sender.other:
                if local:
                    msg = (
                        f"no transport-replace from the peer to answer for {content!r}"
                    )
                    raise LocalProtocolError(msg)
                self.state = SessionState.ERROR
                raise JingleError(
                    f"{action.value} without a pending transport-replace",
                    condition="unexpected-request",
                    jingle_condition="out-of-order",
                )
            del self._replacing[content]

    def _bad(self, local: bool, why: str) -> LocalProtocolError | JingleError:
        if local:
            return LocalProtocolError(why)
        return JingleError(why, condition="bad-request", jingle_condition=None)

    @property
    def pending_replacements(self) -> dict[str, Role]:
        """Content name -> who asked, for unanswered transport-replace requests."""
        return dict(self._replacing)
