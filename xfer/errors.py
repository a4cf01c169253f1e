"""The one error tree of xfer.

Every exception that xfer raises on purpose derives from :class:`XferError`;
anything else escaping the library is a bug::

    XferError
    ├── ProtocolError                 (abstract: never raised as such)
    │   ├── LocalProtocolError        you called the API in a way it forbids
    │   │   └── AlreadyFinalized      a single-use context was used again
    │   └── RemoteProtocolError       the peer (or a stream's producer) broke the rules
    │       └── EnvelopeFormatError   a sealed stream's header is malformed
    │           ├── UnsupportedVersion
    │           └── UnsupportedSuite
    ├── IntegrityError                authentication failed; deliberately opaque
    ├── DestinationExists             refusing to replace an existing file
    ├── NotSecure                     no private (OTR) conversation with the peer
    │   ├── PeerOffline               ... because it is not online
    │   └── PeerIncapable             ... because its client cannot do xfer
    ├── UntrustedPeer                 the peer's OTR fingerprint is not trusted
    ├── TransferRejected              the peer ended the transfer (Jingle reason)
    │   └── TransferDeclined          ... because its user said no
    ├── SharingRefused                a peer refused a shared-folder request
    └── TransportError                moving bytes failed
        ├── ConnectionFailed
        │   ├── ServerUnreachable     no connection to the XMPP server
        │   ├── AuthenticationFailed  the server refused the account or password
        │   ├── TLSFailed             the connection could not be secured as asked
        │   │   ├── CertificateUntrusted  not trusted, or not for the name
        │   │   ├── TLSNotOffered     the server offers no TLS
        │   │   └── TLSRequired       it requires TLS (asked: none)
        │   └── PeerGone              the peer went offline mid-session
        ├── NoUsableTransport
        ├── TransferTimeout
        │   └── VerificationTimeout   no answer to an SMP verification in time
        ├── StreamTruncated          the stream ended early (resumable)
        └── StreamCut                a stream (no size up front) ended early;
                                     it never resumes

The split between local and remote protocol errors follows h11: the local kind
means "fix your code", the remote kind means "the other side sent something
illegal". What we answer is decided in one place per protocol, not carried by
the error: a transfer's Jingle reason by ``xfer.transfer.policy.reason_for``;
a refused stanza's error condition by the errors made for that purpose
(``IBBError.condition``, ``JingleError.condition``).

:class:`IntegrityError` always carries the same message, whatever failed (a
bad tag, a missing final chunk, a wrong key, a foreign transfer), so that it
cannot serve as an oracle.
"""

from __future__ import annotations

import os

__all__ = [
    "AlreadyFinalized",
    "AuthenticationFailed",
    "CertificateUntrusted",
    "ConnectionFailed",
    "DestinationExists",
    "EnvelopeFormatError",
    "IntegrityError",
    "LocalProtocolError",
    "NoUsableTransport",
    "NotSecure",
    "PeerGone",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerUnreachable",
    "SharingRefused",
    "StreamCut",
    "StreamTruncated",
    "TLSFailed",
    "TLSNotOffered",
    "TLSRequired",
    "TransferDeclined",
    "TransferRejected",
    "TransferTimeout",
    "TransportError",
    "UnsupportedSuite",
    "UnsupportedVersion",
    "UntrustedPeer",
    "VerificationTimeout",
    "XferError",
]


class XferError(Exception):
    """Base class of every error xfer raises on purpose."""


class ProtocolError(XferError):
    """A rule of a protocol was broken; see the two concrete subclasses.

    This class is abstract: instantiating it directly raises :class:`TypeError`,
    because every protocol error must say who broke the rule.
    """

    def __new__(cls, *args: object, **kwargs: object) -> ProtocolError:
        if cls is ProtocolError:
            msg = "ProtocolError is abstract: raise a Local- or RemoteProtocolError"
            raise TypeError(msg)
        return super().__new__(cls, *args, **kwargs)


class LocalProtocolError(ProtocolError):
    """The caller used the API in a way it forbids (a bug in the calling code)."""


class AlreadyFinalized(LocalProtocolError):
    """A single-use context (sealer, opener, ...) was used after it finished."""


class RemoteProtocolError(ProtocolError):
    """The peer, or whoever produced the input, broke the protocol."""


class EnvelopeFormatError(RemoteProtocolError):
    """A sealed stream does not start with a well-formed envelope header."""


class UnsupportedVersion(EnvelopeFormatError):
    """The envelope header names a format version this build does not know."""


class UnsupportedSuite(EnvelopeFormatError):
    """The envelope header names a cipher suite this build does not know."""


class IntegrityError(XferError):
    """Authentication of sealed data failed.

    The message is the same for every cause on purpose. No plaintext from an
    unauthenticated chunk is ever released before this is raised.
    """

    MESSAGE = (
        "integrity check failed: the data is damaged, truncated, or not for this key"
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class DestinationExists(XferError):
    """A file would be written over an existing one without leave to do so."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        super().__init__(f"{os.fspath(path)} already exists")
        self.path = os.fspath(path)


class NotSecure(XferError):
    """No private (OTR) conversation with the peer could be set up."""


class PeerOffline(NotSecure):
    """The peer (or the resource named) is not online."""


class PeerIncapable(NotSecure):
    """The peer is online, but no client of it can receive files with xfer.

    ``lacks`` maps each resource asked to what its client lacks (named for
    people: "Jingle file transfer (XEP-0234)").
    """

    def __init__(self, peer: str, lacks: dict[str, tuple[str, ...]]) -> None:
        missing = sorted({what for whats in lacks.values() for what in whats})
        super().__init__(
            f"{peer} is online, but its client cannot receive files with xfer: "
            f"it lacks {', '.join(missing)}"
        )
        self.peer = peer
        self.lacks = lacks


class UntrustedPeer(XferError):
    """The peer proved an OTR key whose fingerprint is not trusted.

    ``fingerprint`` is the 20-byte fingerprint it presented; trust it (after
    checking it with the peer, or by SMP) to go on.
    """

    def __init__(self, peer: str, fingerprint: bytes) -> None:
        super().__init__(
            f"{peer}'s OTR fingerprint {_grouped(fingerprint)} is not trusted"
        )
        self.peer = peer
        self.fingerprint = fingerprint


def _grouped(fingerprint: bytes) -> str:
    # The form of xfer.otr.fingerprint.format_fingerprint, written out here because
    # the error tree is a leaf: it imports nothing from xfer.
    if len(fingerprint) != 20:
        raise LocalProtocolError("a fingerprint is 20 bytes")
    text = fingerprint.hex().upper()
    return " ".join(text[i : i + 8] for i in range(0, 40, 8))


class TransferRejected(XferError):
    """The peer ended the transfer; ``reason`` is its Jingle reason."""

    def __init__(self, message: str, *, reason: str, text: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.text = text


class TransferDeclined(TransferRejected):
    """The peer (or its user) declined the offer."""


class SharingRefused(XferError):
    """A peer refused a request for its shared folder (spec/share.md):
    ``code`` names why (``not-allowed``, ``not-found``, ``bad-request``,
    ``busy``, ``not-sharing``, ``too-large``, ``failed``), ``reason`` is the
    peer's own words."""

    def __init__(self, message: str, *, code: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class TransportError(XferError):
    """Moving bytes between the peers failed."""


class ConnectionFailed(TransportError):
    """A connection could not be made or broke."""


class ServerUnreachable(ConnectionFailed):
    """The XMPP server could not be reached, or did not answer in time."""


class AuthenticationFailed(ConnectionFailed):
    """The server refused the account name or password."""


class TLSFailed(ConnectionFailed):
    """The connection to the XMPP server could not be secured as asked: the
    subclasses say why. Nothing (no password) was sent on it."""


class CertificateUntrusted(TLSFailed):
    """The server's certificate failed verification: issued by a CA we do not
    trust, expired, or not valid for the server's name.

    ``server`` is the name it had to prove, ``reason`` what the check found
    (OpenSSL's words), ``subject``/``issuer``/``names`` what the certificate
    says, when it could be read (else ``None`` / empty).
    """

    def __init__(
        self,
        server: str,
        reason: str,
        *,
        subject: str | None = None,
        issuer: str | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        detail = reason
        if names:
            detail += f"; it is for {', '.join(names)}"
        if issuer:
            detail += f", issued by {issuer}"
        super().__init__(f"the certificate of {server} is not trusted: {detail}")
        self.server = server
        self.reason = reason
        self.subject = subject
        self.issuer = issuer
        self.names = names


class TLSNotOffered(TLSFailed):
    """The server offers no TLS: no STARTTLS on its stream, or no TLS
    handshake on a port asked for direct TLS."""


class TLSRequired(TLSFailed):
    """The server requires TLS, and the client was told to connect without."""


class PeerGone(ConnectionFailed):
    """The peer went offline, or we lost the server, during a session."""


class NoUsableTransport(TransportError):
    """No offered transport worked."""


class TransferTimeout(TransportError):
    """A wait (for the peer, for data, for an acknowledgement) ran out."""


class VerificationTimeout(TransferTimeout):
    """A verification (SMP) waited ``timeout`` seconds for ``peer`` in vain:
    for its question, or for its answer. Our side gave the exchange up (an
    SMP abort went to the peer); trust is unchanged."""

    def __init__(self, message: str, *, peer: str | None, timeout: float) -> None:
        super().__init__(message)
        self.peer = peer
        self.timeout = timeout


class StreamTruncated(TransportError):
    """The data stream ended before the end of the file.

    Everything that came was verified, and only verified plaintext was kept:
    the transfer can resume from there (see ``spec/jingle.md``).
    """


class StreamCut(TransportError):
    """A stream (a transfer with no size up front, ``spec/otr.md`` 5.4)
    ended before its end was verified: the connection broke, the sender
    or receiver stopped, or the data did not verify.

    ``verified`` plaintext bytes were verified and delivered (the
    receiver's count: on the sending side, the one its verdict stated, or
    None when it did not say); ``sent`` is the sender's count of plaintext
    bytes sealed and written (None on the receiving side). A stream never
    resumes: standard input cannot be read again.
    """

    def __init__(
        self, verified: int | None, *, sent: int | None = None, why: str = ""
    ) -> None:
        if verified is not None:
            message = f"stream cut after {verified} verified bytes"
        else:
            message = (
                f"stream cut after {sent} bytes sent (the receiver's count is unknown)"
            )
        super().__init__(message + (f": {why}" if why else ""))
        self.verified = verified
        self.sent = sent
        self.why = why
