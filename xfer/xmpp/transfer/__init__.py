"""Encrypted file transfer: the ``xfer_transfer`` slixmpp plugin.

A package with the import path and the plugin name of the single module
it was; :mod:`.plugin` holds the plugin.

Load it into any slixmpp client::

    import xfer.xmpp.transfer
    client.register_plugin("xfer_transfer", {"identity": identity_dir},
                           module=xfer.xmpp.transfer)
"""

from __future__ import annotations

from xfer.xmpp.transfer.plugin import (
    RESTARTED,
    IncomingOffer,
    SendResult,
    XferTransfer,
    xfer_transfer,
)

__all__ = ["RESTARTED", "IncomingOffer", "SendResult", "XferTransfer", "xfer_transfer"]
