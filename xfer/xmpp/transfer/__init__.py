"""Encrypted file transfer: the ``xfer_transfer`` slixmpp plugin.

A package with the import path and the plugin name of the single module
it was, split by responsibility (imports point down this list):

- :mod:`.plugin`: lifecycle, liveness, the public facade; hands each part
  what it needs;
- :mod:`.sending`: the sender's resume loop, one offer, the verdict wait;
- :mod:`.receiving`: incoming offers, vetting, receipts, the receive loop;
- :mod:`.placement`: where a received file lands, which partial it continues;
- :mod:`.negotiation`: XEP-0260 SOCKS5, XEP-0261 IBB, waiting on Jingle;
- :mod:`.notices`: what else peers send (text inside OTR, refused
  unencrypted offers), rate-limited, for the application;
- :mod:`.context`: typed settings, the sibling plugins, shared bits.

Load it into any slixmpp client::

    import xfer.xmpp.transfer
    client.register_plugin("xfer_transfer", {"identity": identity_dir},
                           module=xfer.xmpp.transfer)
"""

from __future__ import annotations

from xfer.xmpp.transfer.plugin import (
    RESTARTED,
    IncomingOffer,
    ManyResult,
    ReceivedStream,
    SendResult,
    XferTransfer,
    xfer_transfer,
)

__all__ = [
    "RESTARTED",
    "IncomingOffer",
    "ManyResult",
    "ReceivedStream",
    "SendResult",
    "XferTransfer",
    "xfer_transfer",
]
