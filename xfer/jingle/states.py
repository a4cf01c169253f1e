"""The XEP-0166 session state machine as data (Jingle 1.1.2, sections 6 and 7).

Theory of operation
-------------------
A Jingle session moves PENDING (after session-initiate) -> ACTIVE (after
session-accept) -> ENDED (after session-terminate). Before session-initiate
it is NEW. Content, transport and informational actions are allowed in both
PENDING and ACTIVE. Only the initiator sends session-initiate and only the
responder sends session-accept.

:data:`TRANSITIONS` maps (state, role of the sender, action) to the next
state; :class:`~xfer.jingle.session.JingleSession` checks every action sent
or received against it. A received action that is not in the table is
answered as XEP-0166 says (``out-of-order``, or ``unknown-session`` once the
session ended) and puts the machine in the sticky ERROR state; a sent one is
a :class:`~xfer.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "Action", "Reason", "Role", "SessionState"]


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Role:
        return Role.RESPONDER if self is Role.INITIATOR else Role.INITIATOR


class SessionState(enum.Enum):
    NEW = "new"
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"
    ERROR = "error"


class Action(enum.Enum):
    """The ``action`` attribute values of XEP-0166 section 7.2."""

    CONTENT_ACCEPT = "content-accept"
    CONTENT_ADD = "content-add"
    CONTENT_MODIFY = "content-modify"
    CONTENT_REJECT = "content-reject"
    CONTENT_REMOVE = "content-remove"
    DESCRIPTION_INFO = "description-info"
    SECURITY_INFO = "security-info"
    SESSION_ACCEPT = "session-accept"
    SESSION_INFO = "session-info"
    SESSION_INITIATE = "session-initiate"
    SESSION_TERMINATE = "session-terminate"
    TRANSPORT_ACCEPT = "transport-accept"
    TRANSPORT_INFO = "transport-info"
    TRANSPORT_REJECT = "transport-reject"
    TRANSPORT_REPLACE = "transport-replace"


class Reason(enum.Enum):
    """The ``<reason/>`` conditions of XEP-0166 section 7.4."""

    ALTERNATIVE_SESSION = "alternative-session"
    BUSY = "busy"
    CANCEL = "cancel"
    CONNECTIVITY_ERROR = "connectivity-error"
    DECLINE = "decline"
    EXPIRED = "expired"
    FAILED_APPLICATION = "failed-application"
    FAILED_TRANSPORT = "failed-transport"
    GENERAL_ERROR = "general-error"
    GONE = "gone"
    INCOMPATIBLE_PARAMETERS = "incompatible-parameters"
    MEDIA_ERROR = "media-error"
    SECURITY_ERROR = "security-error"
    SUCCESS = "success"
    TIMEOUT = "timeout"
    UNSUPPORTED_APPLICATIONS = "unsupported-applications"
    UNSUPPORTED_TRANSPORTS = "unsupported-transports"


#: Actions that negotiate or inform within a live session (either side).
_IN_SESSION = frozenset(Action) - {
    Action.SESSION_INITIATE,
    Action.SESSION_ACCEPT,
    Action.SESSION_TERMINATE,
}

_S, _R = SessionState, Role


def _table() -> dict[tuple[SessionState, Role, Action], SessionState]:
    table: dict[tuple[SessionState, Role, Action], SessionState] = {
        (_S.NEW, _R.INITIATOR, Action.SESSION_INITIATE): _S.PENDING,
        (_S.PENDING, _R.RESPONDER, Action.SESSION_ACCEPT): _S.ACTIVE,
    }
    for role in Role:
        # After a protocol error the only way on is to end the session.
        table[_S.ERROR, role, Action.SESSION_TERMINATE] = _S.ENDED
    for state in (_S.PENDING, _S.ACTIVE):
        for role in Role:
            table[state, role, Action.SESSION_TERMINATE] = _S.ENDED
            for action in _IN_SESSION:
                table[state, role, action] = state
    return table


#: (state, role of whoever sends the action, action) -> next state.
TRANSITIONS = _table()
