"""slixmpp adapters: the XMPP client and xfer's plugins (the only XMPP I/O)."""

from __future__ import annotations
