"""xfer: end-to-end encrypted file transfer over XMPP, keyed by OTR v3."""

from __future__ import annotations

from xfer.envelope import EnvelopeHeader, Opener, Sealer, Suite
from xfer.errors import (
    AlreadyFinalized,
    ConnectionFailed,
    DestinationExists,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    NoUsableTransport,
    ProtocolError,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
    UnsupportedSuite,
    UnsupportedVersion,
    XferError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AlreadyFinalized",
    "ConnectionFailed",
    "DestinationExists",
    "EnvelopeFormatError",
    "EnvelopeHeader",
    "IntegrityError",
    "LocalProtocolError",
    "NoUsableTransport",
    "Opener",
    "ProtocolError",
    "RemoteProtocolError",
    "Sealer",
    "Suite",
    "TransferTimeout",
    "TransportError",
    "UnsupportedSuite",
    "UnsupportedVersion",
    "XferError",
    "__version__",
]
