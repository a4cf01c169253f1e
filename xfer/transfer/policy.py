"""What a transfer's failures mean: the Jingle reason that tells the peer
why we stopped, the fixed text the servers may read, the details the peer
reads inside OTR, what counts as a break worth resuming, and the range a
receiver may ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfer.errors import (
    DestinationExists,
    EnvelopeFormatError,
    IntegrityError,
    NotSecure,
    NoUsableTransport,
    RemoteProtocolError,
    TransferRejected,
    TransferTimeout,
    TransportError,
    UntrustedPeer,
)
from xfer.jingle import JingleError, Reason

if TYPE_CHECKING:
    from xfer.jingle.wire import Jingle

__all__ = [
    "ENCRYPTED_ONLY",
    "RESUMABLE",
    "broke_off",
    "clip",
    "private_text",
    "public_text",
    "range_offset",
    "reason_for",
]

#: Why a file offered without xfer's end-to-end encryption is refused: the
#: text of the Jingle ``security-error`` (``spec/jingle.md`` 5.2, check 3)
#: and of the ``forbidden`` stanza error that answers a legacy
#: stream-initiation offer (5.7).
ENCRYPTED_ONLY = "xfer accepts only end-to-end encrypted files"

#: The reasons with which a transfer ends that broke rather than failed: the
#: sender offers the rest again, and the receiver waits for that offer.
RESUMABLE = frozenset(
    {
        Reason.CONNECTIVITY_ERROR.value,
        Reason.FAILED_TRANSPORT.value,
        Reason.TIMEOUT.value,
    }
)


def broke_off(exc: BaseException | None) -> bool:
    """A break worth going on from: the transport failed (not the data)."""
    if isinstance(exc, TransferRejected):
        return exc.reason in RESUMABLE
    return isinstance(exc, TransportError)


def range_offset(accept: Jingle, size: int) -> int:
    """Where the receiver wants the file from: the offset of the
    ``<range/>`` in its session-accept (0 without one)."""
    content = accept.content
    if content is None or content.description is None:
        return 0
    wanted = content.description.range
    if wanted is None:
        return 0
    if wanted.length is not None or not 0 <= wanted.offset <= size:
        raise RemoteProtocolError(
            "the receiver asked for a range that xfer does not send"
        )
    return wanted.offset


def reason_for(exc: BaseException) -> Reason:
    """The Jingle reason that tells the peer why we stopped."""
    if isinstance(exc, (IntegrityError, EnvelopeFormatError, UntrustedPeer, NotSecure)):
        return Reason.SECURITY_ERROR
    if isinstance(exc, TransferTimeout):
        return Reason.TIMEOUT
    if isinstance(exc, NoUsableTransport):
        return Reason.CONNECTIVITY_ERROR
    if isinstance(exc, TransportError):
        return Reason.FAILED_TRANSPORT
    if isinstance(exc, JingleError | RemoteProtocolError):
        return Reason.GENERAL_ERROR
    if isinstance(exc, OSError | DestinationExists):
        return Reason.MEDIA_ERROR
    if not isinstance(exc, Exception):  # cancelled, interrupted, exiting
        return Reason.CANCEL
    return Reason.GENERAL_ERROR


def public_text(exc: BaseException, *, receiving: bool) -> str | None:
    """What the servers may read about our failure (a Jingle reason text):
    a fixed phrase per kind of failure, never a path, a name or how much of
    the file had arrived. The details go to the peer inside OTR (the
    verdict, :func:`_private_text`)."""
    if isinstance(exc, OSError | DestinationExists):
        return (
            "the receiver could not store the file"
            if receiving
            else "the sender could not read the file"
        )
    if isinstance(exc, IntegrityError | EnvelopeFormatError):
        return "the data did not verify"
    if isinstance(exc, UntrustedPeer):
        return "fingerprint not trusted"
    if isinstance(exc, NotSecure):
        return "no private conversation"
    if isinstance(exc, TransferTimeout):
        return "timed out"
    if isinstance(exc, NoUsableTransport):
        return "no usable transport"
    if isinstance(exc, TransportError):
        return "the bytestream failed"
    if isinstance(exc, JingleError | RemoteProtocolError):
        return "protocol error"
    return None


def private_text(exc: BaseException) -> str:
    """Why we refused a file, for the sender inside OTR: the error's own
    words, but never a local path."""
    if isinstance(exc, OSError):
        return f"the receiver could not store the file ({exc.strerror or 'I/O error'})"
    if isinstance(exc, DestinationExists):
        return "the receiver could not store the file (the name is taken)"
    return str(exc) or type(exc).__name__


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, whole characters."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")
