"""Whether a stanza waited at a server: the delay elements of XEP-0203 and of
XEP-0091 (obsolete, still added by some servers).

Servers stamp a message they stored or resent: mod_offline for an account
that was offline, stream management (XEP-0198) for one that was not
acknowledged; Prosody adds both to a message that the second handed to the
first. What the OTR plugin makes of it is in ``spec/otr.md`` section 2.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from xfer.errors import RemoteProtocolError
from xfer.otr.session import MessageState

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Callable

    from xfer.otr import events as ev
    from xfer.otr.account import Account
    from xfer.otr.session import Session

__all__ = ["NS_DELAY", "NS_LEGACY_DELAY", "is_delayed", "read_delayed"]

log = logging.getLogger(__name__)

NS_DELAY = "urn:xmpp:delay"
NS_LEGACY_DELAY = "jabber:x:delay"
#: An OTR v3 data message: "?OTR:" + base64 of version 3, type 3.
DATA_PREFIX = "?OTR:AAMD"
_TAGS = frozenset({f"{{{NS_DELAY}}}delay", f"{{{NS_LEGACY_DELAY}}}x"})


def is_delayed(stanza: ET.Element) -> bool:
    """Whether a delay is anywhere in ``stanza``: the first child, a later
    one, or nested deeper."""
    return any(element.tag in _TAGS for element in stanza.iter())


def read_delayed(
    account: Account,
    peer: str,
    body: str,
    now: float,
    flush: Callable[[], None],
) -> tuple[Session, list[ev.Event]] | None:
    """Read an OTR message from ``peer`` that waited at a server (offline
    storage, or a stream management resend; ``spec/otr.md`` section 2,
    "Delayed messages"), or drop it (``None``).

    It may belong to a conversation long gone, so it never starts, answers
    or restarts a key exchange, is no sign of life, and is never answered.
    Only a whole data message is read, and only when a session with ``peer``
    is ENCRYPTED now: one that verifies (MAC, increasing counter) is of that
    session and counts like any other; anything else is dropped. ``flush``
    sends what the account queued (before reading: what was queued earlier
    goes out; after: a verified message may end the conversation, TLV 1);
    replies that a drop queued are discarded instead.
    """
    if not body.startswith(DATA_PREFIX) or not any(
        s.state is MessageState.ENCRYPTED for s in account.sessions(peer)
    ):
        log.info("ignoring a delayed (server-stored) OTR message from %s", peer)
        return None
    flush()
    try:
        session, events = account.receive(peer, body, now=now)
    except RemoteProtocolError as exc:
        # Unreadable (a conversation that is gone): the engine queued an OTR
        # error for the peer, which would tell it to start over.
        for stale in account.sessions(peer):
            stale.data_to_send()
        log.info("dropping a delayed OTR message from %s: %s", peer, exc)
        return None
    flush()
    return session, events
