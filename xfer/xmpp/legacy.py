"""Legacy file offers (XEP-0096 over XEP-0095 stream initiation), refused
with a reason: the ``xfer_xep_0096`` plugin.

Older clients offer a file with ``<iq type='set'><si profile='.../file-
transfer'><file name=... size=.../>...</si></iq>``. Nothing in it is
end-to-end encrypted, so xfer never takes one; without this plugin slixmpp
would answer "No handlers registered", which tells the sender nothing.
Instead every such offer is answered as XEP-0096 says a declined one is
(``forbidden``, type ``cancel``), with the text
:data:`~xfer.transfer.policy.ENCRYPTED_ONLY`, and handed to
:attr:`XferSI.on_offer` as a :class:`~xfer.notices.RefusedOffer`, so that the
user learns who offered what (``spec/jingle.md`` 5.7). An offer for another
profile gets XEP-0095's ``bad-request`` with ``<bad-profile/>``; an SI
``get`` a ``bad-request``. xfer does not announce stream initiation in
service discovery.

The offer is parsed defensively: the name is cut to :data:`MAX_NAME`
characters, a size that is not 1 to 20 ASCII digits or exceeds 2^62 is
unknown (None). How many offers reach the application is bounded by its
receiver of :attr:`XferSI.on_offer` (``xfer_transfer``: a rate limit).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, ClassVar

from slixmpp.plugins.base import BasePlugin
from slixmpp.stanza import Iq
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xfer.notices import VIA_SI, RefusedOffer
from xfer.transfer.policy import ENCRYPTED_ONLY
from xfer.xmpp._slixmpp import error_reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

__all__ = ["MAX_NAME", "NS_SI", "NS_SI_FILE", "XferSI", "parse_offer"]

log = logging.getLogger(__name__)

#: XEP-0095 stream initiation.
NS_SI = "http://jabber.org/protocol/si"
#: XEP-0096, its file-transfer profile (also the ``<file/>`` namespace).
NS_SI_FILE = "http://jabber.org/protocol/si/profile/file-transfer"
#: The characters of an offered name kept (the rest is cut).
MAX_NAME = 1024
#: The largest size believed (as for a Jingle file, ``spec/jingle.md`` 8).
MAX_SIZE = 2**62
_MAX_DIGITS = 20


def parse_offer(si: ET.Element) -> tuple[str | None, int | None]:
    """The offered file's name and size, each None if absent or unusable."""
    file = si.find(f"{{{NS_SI_FILE}}}file")
    if file is None:
        return None, None
    name = file.get("name") or None
    if name is not None and len(name) > MAX_NAME:
        name = name[:MAX_NAME]
    raw = file.get("size", "")
    size = None
    if raw.isascii() and raw.isdigit() and len(raw) <= _MAX_DIGITS:
        size = int(raw) if int(raw) <= MAX_SIZE else None
    return name, size


class XferSI(BasePlugin):
    """``client.register_plugin("xfer_xep_0096", module=xfer.xmpp.legacy)``."""

    name = "xfer_xep_0096"
    description = "XEP-0095/XEP-0096: legacy file offers, refused (xfer)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {}

    def plugin_init(self) -> None:
        #: Called with each refused file offer.
        self.on_offer: Callable[[RefusedOffer], object] | None = None
        self.xmpp.register_handler(
            Callback(
                "xfer_xep_0096",
                MatchXPath(f"{{jabber:client}}iq/{{{NS_SI}}}si"),
                self._on_iq,
            )
        )

    def plugin_end(self) -> None:
        self.xmpp.remove_handler("xfer_xep_0096")

    def _on_iq(self, stanza: StanzaBase) -> None:
        assert isinstance(stanza, Iq)
        if stanza["type"] == "get":
            error_reply(stanza, "bad-request", "modify")
            return
        if stanza["type"] != "set":
            return  # a result or an error: never answered (RFC 6120 8.2.3)
        si = stanza.xml.find(f"{{{NS_SI}}}si")
        assert si is not None
        if si.get("profile") != NS_SI_FILE:
            error_reply(
                stanza,
                "bad-request",
                "modify",
                detail=ET.Element(f"{{{NS_SI}}}bad-profile"),
            )
            return
        error_reply(stanza, "forbidden", "cancel", text=ENCRYPTED_ONLY)
        name, size = parse_offer(si)
        peer = stanza["from"].full
        refused = RefusedOffer(
            peer=peer, name=name, size=size, via=VIA_SI, reason=ENCRYPTED_ONLY
        )
        if self.on_offer is None:
            log.info("refused a stream-initiation file offer from %r", peer)
        else:
            self.on_offer(refused)


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_xep_0096 = XferSI
