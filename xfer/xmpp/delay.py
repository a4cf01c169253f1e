"""Whether a stanza waited at a server: the delay elements of XEP-0203 and of
XEP-0091 (obsolete, still added by some servers).

Servers stamp a message they stored or resent: mod_offline for an account
that was offline, stream management (XEP-0198) for one that was not
acknowledged; Prosody adds both to a message that the second handed to the
first. What the OTR plugin makes of it is in ``spec/otr.md`` section 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

__all__ = ["NS_DELAY", "NS_LEGACY_DELAY", "is_delayed"]

NS_DELAY = "urn:xmpp:delay"
NS_LEGACY_DELAY = "jabber:x:delay"
_TAGS = frozenset({f"{{{NS_DELAY}}}delay", f"{{{NS_LEGACY_DELAY}}}x"})


def is_delayed(stanza: ET.Element) -> bool:
    """Whether a delay is anywhere in ``stanza``: the first child, a later
    one, or nested deeper."""
    return any(element.tag in _TAGS for element in stanza.iter())
