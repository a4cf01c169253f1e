"""OTR version 3, sans-I/O: messages in, messages out.

Start with :class:`Session`; its events are in :mod:`xfer.otr.events`. The
profile xfer implements, and its TLV 8 payload, are in ``spec/otr.md``.
"""

from __future__ import annotations

from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey, PublicKey
from xfer.otr.session import MessageState, Policy, Session

__all__ = ["Account", "MessageState", "Policy", "PrivateKey", "PublicKey", "Session"]
