"""Which fingerprints we trust for whom.

:class:`TrustStore` maps a peer's bare JID to the fingerprints trusted for it
and how each was verified (by hand, or by SMP). It is plain data with a JSON
form; :mod:`xfer.store` keeps it in a file. The clock is a parameter.

What an SMP exchange does to the store is decided here, in one place
(:meth:`TrustStore.record_smp`, ``spec/otr.md`` section 3.1): a success
trusts the conversation's fingerprint (by SMP), a failure removes its trust
however it was given, an abort changes nothing.

Fingerprint text lives in :mod:`xfer.otr.fingerprint`; ``format_fingerprint``
and ``parse_fingerprint`` are re-exported here for code that imports them
from this module, and so is :func:`xfer.jid.bare_jid`, the rule that makes
the store's keys.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from xfer.errors import LocalProtocolError
from xfer.jid import bare_jid
from xfer.otr.fingerprint import format_fingerprint, parse_fingerprint

__all__ = [
    "SMPResult",
    "TrustEntry",
    "TrustStore",
    "Verification",
    "bare_jid",
    "format_fingerprint",
    "parse_fingerprint",
]


class Verification(enum.Enum):
    MANUAL = "manual"  # compared by the user, or given on the command line
    SMP = "smp"  # a successful Socialist Millionaires' exchange


class SMPResult(enum.Enum):
    """How an SMP exchange (a verification) ended.

    True only for :attr:`SUCCEEDED` (``if await client.verify(...)`` reads
    as it did when the result was a bool); compare with the members to tell
    a failure from an abort.
    """

    #: Both sides had the same secret: the fingerprint is trusted (by SMP).
    SUCCEEDED = "succeeded"
    #: The secrets differ, or a proof did not verify (someone is in the
    #: middle, or cheats): the fingerprint is no longer trusted, however it
    #: was trusted before.
    FAILED = "failed"
    #: Abandoned before the end, by either side (the peer sent an SMP abort,
    #: or ours was sent: a step out of order, too much SMP work): nothing was
    #: learnt, and trust is unchanged.
    ABORTED = "aborted"

    def __bool__(self) -> bool:
        return self is SMPResult.SUCCEEDED


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustEntry:
    fingerprint: bytes
    how: Verification
    since: int  # seconds since the epoch


class TrustStore:
    """Peer bare JID -> trusted fingerprints."""

    VERSION = 1

    def __init__(self) -> None:
        self._peers: dict[str, dict[bytes, TrustEntry]] = {}

    def trust(
        self, jid: str, fingerprint: bytes, how: Verification, *, now: int
    ) -> None:
        if len(fingerprint) != 20:
            raise LocalProtocolError("a fingerprint is 20 bytes")
        entry = TrustEntry(fingerprint=fingerprint, how=how, since=now)
        self._peers.setdefault(bare_jid(jid), {})[fingerprint] = entry

    def untrust(self, jid: str, fingerprint: bytes | None = None) -> int:
        """Forget one fingerprint of ``jid`` (or all); return how many went."""
        peer = self._peers.get(bare_jid(jid), {})
        if fingerprint is None:
            gone = len(peer)
            peer.clear()
        else:
            gone = 1 if peer.pop(fingerprint, None) else 0
        if not peer:
            self._peers.pop(bare_jid(jid), None)
        return gone

    def record_smp(
        self, jid: str, fingerprint: bytes, result: SMPResult, *, now: int
    ) -> bool:
        """Apply the outcome of an SMP exchange with ``jid`` over a
        conversation whose peer proved ``fingerprint``; whether the store
        changed (and must be saved).

        A success trusts the fingerprint by SMP; a failure forgets it, also
        if it was trusted by hand: the exchange just said that the peer's
        user does not know the secret, or that someone is in the middle, and
        what is shown afterwards must be what is stored. An abort proves
        nothing either way and changes nothing.
        """
        if result is SMPResult.SUCCEEDED:
            self.trust(jid, fingerprint, Verification.SMP, now=now)
            return True
        if result is SMPResult.FAILED:
            return self.untrust(jid, fingerprint) > 0
        return False

    def entry(self, jid: str, fingerprint: bytes) -> TrustEntry | None:
        return self._peers.get(bare_jid(jid), {}).get(fingerprint)

    def is_trusted(self, jid: str, fingerprint: bytes) -> bool:
        return self.entry(jid, fingerprint) is not None

    def entries(self, jid: str | None = None) -> list[tuple[str, TrustEntry]]:
        peers = [bare_jid(jid)] if jid else sorted(self._peers)
        return [
            (peer, entry)
            for peer in peers
            for entry in sorted(
                self._peers.get(peer, {}).values(), key=lambda e: e.since
            )
        ]

    def to_json(self) -> bytes:
        data = {
            "version": self.VERSION,
            "peers": {
                peer: [
                    {
                        "fingerprint": e.fingerprint.hex(),
                        "how": e.how.value,
                        "since": e.since,
                    }
                    for e in entries.values()
                ]
                for peer, entries in sorted(self._peers.items())
            },
        }
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> TrustStore:
        """Raises LocalProtocolError if the file is not a trust store."""
        store = cls()
        try:
            data = json.loads(raw)
            if data.get("version") != cls.VERSION:
                raise LocalProtocolError("unknown trust store version")
            for peer, entries in data["peers"].items():
                for e in entries:
                    store.trust(
                        peer,
                        bytes.fromhex(e["fingerprint"]),
                        Verification(e["how"]),
                        now=int(e["since"]),
                    )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalProtocolError(f"the trust store is damaged: {exc}") from exc
        return store
