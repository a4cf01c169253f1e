"""What an OTR session tells its user: frozen, slotted, keyword-only dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Event",
    "GoneInsecure",
    "GoneSecure",
    "MessageReceived",
    "OTRErrorReceived",
    "PlaintextReceived",
    "QueryReceived",
    "SMPAborted",
    "SMPAsked",
    "SMPFailed",
    "SMPPending",
    "SMPSucceeded",
    "SymmetricKeyReceived",
    "VersionUnsupported",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class GoneSecure:
    """The AKE finished: messages are now encrypted and authenticated.

    Whether ``fingerprint`` is trusted is the application's decision (see
    :class:`xfer.otr.keys.TrustStore`); OTR only proves who holds that key.
    """

    fingerprint: bytes
    ssid: bytes
    their_tag: int
    #: True if this session was already secure (a refresh, maybe a new key).
    refreshed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GoneInsecure:
    """The peer ended the private conversation (TLV 1): state FINISHED."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """An encrypted message's text (never empty: heartbeats are not reported)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaintextReceived:
    """An unencrypted message (never empty), without its whitespace tag if it
    had one; ``offered_otr`` if that tag offered version 3.

    Nothing about it is authenticated: anyone on the way (the servers) can
    write it, in anyone's name.
    """

    text: str
    offered_otr: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryReceived:
    """The peer asked for OTR; ``answered`` if we replied with a D-H Commit."""

    versions: frozenset[int]
    answered: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionUnsupported:
    """The peer offered OTR, but only in versions other than 3, the one xfer
    speaks: a query message or whitespace tag without version 3, or the
    first message of an older AKE (a version 2 D-H Commit, a version 1 Key
    Exchange). No AKE was started, and nothing changed in any session.

    ``peer_versions`` are the versions it offered. Like any plain text, this
    is not authenticated: the servers can send it in anyone's name.
    """

    peer_versions: frozenset[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class OTRErrorReceived:
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SymmetricKeyReceived:
    """A TLV 8: the peer derived ``key`` for ``use`` with ``data``.

    The key is that of the D-H key pair the carrying message was decrypted
    with; the sender got the same key from its own call.
    """

    use: int
    data: bytes
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPPending:
    """An SMP step waits to be computed (``Policy.defer_smp``).

    Its exponentiations take far too long for an event loop: take the job
    with ``Session.smp_next()``, run it anywhere with
    :func:`xfer.otr.smp.run_smp_job`, and hand the result to
    ``Session.smp_finish()`` on the session's own thread (or do all three
    inline with ``Session.smp_run()``). The SMP events come from there.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPAsked:
    """The peer started SMP; answer with ``Session.smp_answer(secret)``."""

    question: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPSucceeded:
    """Both sides typed the same secret: the peer's fingerprint is verified."""

    fingerprint: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPFailed:
    """The secrets differed (``cheated``: a proof did not even verify)."""

    cheated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPAborted:
    """The exchange was abandoned (by either side, or out of order)."""


Event = (
    GoneSecure
    | GoneInsecure
    | MessageReceived
    | PlaintextReceived
    | QueryReceived
    | VersionUnsupported
    | OTRErrorReceived
    | SymmetricKeyReceived
    | SMPPending
    | SMPAsked
    | SMPSucceeded
    | SMPFailed
    | SMPAborted
)
