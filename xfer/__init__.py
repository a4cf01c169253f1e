"""xfer: end-to-end encrypted file transfer over XMPP, keyed by OTR v3.

``xfer.connect`` (and ``xfer.Client``) are imported on first use, so that the
sans-I/O parts (``xfer.envelope``, ``xfer.otr``...) load without slixmpp.
"""

from __future__ import annotations

import typing

from xfer.envelope import EnvelopeHeader, Opener, Sealer, Suite
from xfer.errors import (
    AlreadyFinalized,
    ConnectionFailed,
    DestinationExists,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    NotSecure,
    NoUsableTransport,
    PeerIncapable,
    PeerOffline,
    ProtocolError,
    RemoteProtocolError,
    SharingRefused,
    StreamCut,
    TransferDeclined,
    TransferRejected,
    TransferTimeout,
    TransportError,
    UnsupportedSuite,
    UnsupportedVersion,
    UntrustedPeer,
    VerificationTimeout,
    XferError,
)
from xfer.otr.trust import SMPResult

if typing.TYPE_CHECKING:
    from xfer.api import Client, connect

__version__ = "0.1.0.dev0"

__all__ = [
    "AlreadyFinalized",
    "Client",
    "ConnectionFailed",
    "DestinationExists",
    "EnvelopeFormatError",
    "EnvelopeHeader",
    "IntegrityError",
    "LocalProtocolError",
    "NoUsableTransport",
    "NotSecure",
    "Opener",
    "PeerIncapable",
    "PeerOffline",
    "ProtocolError",
    "RemoteProtocolError",
    "SMPResult",
    "Sealer",
    "SharingRefused",
    "StreamCut",
    "Suite",
    "TransferDeclined",
    "TransferRejected",
    "TransferTimeout",
    "TransportError",
    "UnsupportedSuite",
    "UnsupportedVersion",
    "UntrustedPeer",
    "VerificationTimeout",
    "XferError",
    "__version__",
    "connect",
]


def __getattr__(name: str) -> object:
    if name in ("Client", "connect"):
        from xfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'xfer' has no attribute {name!r}")
