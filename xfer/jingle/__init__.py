"""Jingle (XEP-0166) as data and state machines, sans-I/O; no XML here."""

from __future__ import annotations

from xfer.jingle.session import JingleError, JingleSession
from xfer.jingle.states import TRANSITIONS, Action, Reason, Role, SessionState

__all__ = [
    "TRANSITIONS",
    "Action",
    "JingleError",
    "JingleSession",
    "Reason",
    "Role",
    "SessionState",
]
