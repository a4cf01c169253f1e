"""What the plugin hands its parts: its settings, typed, and the sibling
plugins it composes. The parts never import :mod:`.plugin`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfer.envelope import Suite
from xfer.envelope.choice import fastest_suite
from xfer.xmpp._slixmpp import plugin, stream_addresses
from xfer.xmpp.ibb import XferIBB
from xfer.xmpp.jingle import XferJingle
from xfer.xmpp.legacy import XferSI
from xfer.xmpp.otr import XferOTR
from xfer.xmpp.socks5 import XferSocks5

if TYPE_CHECKING:
    from pathlib import Path

    from slixmpp import BaseXMPP

    from xfer.notices import Notice
    from xfer.otr.trust import TrustStore
    from xfer.store import IdentityStore

#: The reason text with which a receiver that lost its OTR session (it
#: restarted) refuses an offer it could not read; the sender then renews the
#: OTR session and offers once more.
RESTARTED = "the OTR session was restarted, offer again"

#: ``accept_untrusted``: a flag, or a function of (peer, fingerprint).
TrustPolicy = bool | Callable[[str, bytes], object]


class Settings:
    """The ``xfer_transfer`` configuration (see ``XferTransfer``), typed.

    It reads through to slixmpp's config dict, which stays the way to change
    a setting while the plugin runs (``plugin.config["advertise"] = ...``):
    every part sees the change at its next use, as before the split.
    """

    __slots__ = ("_config",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def _float(self, key: str) -> float:
        value: float = self._config[key]
        return value

    def _int(self, key: str) -> int:
        value: int = self._config[key]
        return value

    def _flag(self, key: str) -> bool:
        return bool(self._config[key])

    @property
    def identity(self) -> IdentityStore | str | Path | None:
        value: IdentityStore | str | Path | None = self._config["identity"]
        return value

    @property
    def accept_untrusted(self) -> TrustPolicy:
        value: TrustPolicy = self._config["accept_untrusted"]
        return value

    @property
    def max_size(self) -> int | None:
        value: int | None = self._config["max_size"]
        return value

    @property
    def socks5_direct(self) -> bool:
        return self._flag("socks5_direct")

    @property
    def socks5_proxy(self) -> bool:
        return self._flag("socks5_proxy")

    @property
    def ibb(self) -> bool:
        return self._flag("ibb")

    @property
    def ibb_block_size(self) -> int:
        return self._int("ibb_block_size")

    @property
    def advertise(self) -> list[tuple[str, int]] | None:
        value: list[tuple[str, int]] | None = self._config["advertise"]
        return value

    @property
    def local_addresses(self) -> bool:
        return self._flag("local_addresses")

    @property
    def loopback(self) -> bool | None:
        value: bool | None = self._config["loopback"]
        return value

    @property
    def addresses(self) -> list[tuple[str, int | None]]:
        value: list[tuple[str, int | None]] | None = self._config["addresses"]
        return list(value or ())

    @property
    def candidate_timeout(self) -> float:
        return self._float("candidate_timeout")

    @property
    def candidate_grace(self) -> float:
        return self._float("candidate_grace")

    @property
    def chunk_size(self) -> int:
        return self._int("chunk_size")

    @property
    def suite(self) -> Suite:
        """The suite to seal with: ``"auto"`` (the default) is the one whose
        MAC is faster on this machine (:func:`~xfer.envelope.choice.fastest_suite`);
        else a :class:`~xfer.envelope.Suite` or its label."""
        value: Suite | str = self._config["suite"]
        if value == "auto":
            return fastest_suite()
        if isinstance(value, str):
            return Suite.from_label(value)
        return Suite(value)

    @property
    def workers(self) -> int:
        return self._int("workers")

    @property
    def offer_timeout(self) -> float:
        return self._float("offer_timeout")

    @property
    def connect_timeout(self) -> float:
        return self._float("connect_timeout")

    def probe_wait(self, peer: str, us: str) -> float:
        """How long to wait for a sign of ``peer`` before the key exchange:
        ``probe_timeout``, or ``probe_timeout_remote`` for a peer on another
        domain (the servers may first have to connect to each other)."""
        local = _domain(peer) == _domain(us)
        return self._float("probe_timeout" if local else "probe_timeout_remote")

    @property
    def max_pending_offers(self) -> int:
        return self._int("max_pending_offers")

    @property
    def max_untrusted_offers(self) -> int:
        return self._int("max_untrusted_offers")

    @property
    def otr_offer_wait(self) -> float:
        return self._float("otr_offer_wait")

    @property
    def stall_timeout(self) -> float:
        return self._float("stall_timeout")

    @property
    def resume_attempts(self) -> int:
        return self._int("resume_attempts")

    @property
    def resume_backoff(self) -> float:
        return self._float("resume_backoff")

    @property
    def resume_backoff_max(self) -> float:
        return self._float("resume_backoff_max")

    @property
    def resume_wait(self) -> float:
        return self._float("resume_wait")

    @property
    def keep_partial(self) -> bool:
        return self._flag("keep_partial")

    @property
    def partial_max_age(self) -> float:
        return self._float("partial_max_age")

    @property
    def max_per_peer(self) -> int:
        return self._int("max_per_peer")

    @property
    def resume_check(self) -> float:
        return self._float("resume_check")


def _domain(jid: str) -> str:
    return jid.split("/", 1)[0].rpartition("@")[2].lower()


@dataclass(kw_only=True)
class Liveness:
    """Our connection, as the plugin sees it."""

    #: Set while we are connected (a resumed XEP-0198 stream included).
    online: asyncio.Event = field(default_factory=asyncio.Event)
    #: How often the connection dropped: a failure during which it did
    #: may be the network's, not the peer's.
    drops: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What the plugin hands each part."""

    settings: Settings
    siblings: Siblings
    #: Whether a peer's fingerprint is one we send to and take files from.
    trust_ok: Callable[[str, bytes], bool]
    liveness: Liveness
    #: Tell the application what a peer sent that xfer does not take (a
    #: refused unencrypted offer); rate-limited (``.notices``).
    notice: Callable[[Notice], object]


class Siblings:
    """The plugins ``xfer_transfer`` composes, looked up (typed) when used,
    and our own full JID as it is bound now."""

    __slots__ = ("_xmpp",)

    def __init__(self, xmpp: BaseXMPP) -> None:
        self._xmpp = xmpp

    @property
    def jid(self) -> str:
        full: str = self._xmpp.boundjid.full
        return full

    @property
    def domain(self) -> str:
        """Our server's domain."""
        domain: str = self._xmpp.boundjid.domain
        return domain

    def stream_addresses(self) -> tuple[str | None, str | None]:
        """The local and remote IP addresses of our XMPP connection."""
        return stream_addresses(self._xmpp)

    @property
    def otr(self) -> XferOTR:
        return plugin(self._xmpp, "xfer_otr", XferOTR)

    @property
    def jingle(self) -> XferJingle:
        return plugin(self._xmpp, "xfer_xep_0166", XferJingle)

    @property
    def socks5(self) -> XferSocks5:
        return plugin(self._xmpp, "xfer_socks5", XferSocks5)

    @property
    def si(self) -> XferSI:
        return plugin(self._xmpp, "xfer_xep_0096", XferSI)

    @property
    def ibb(self) -> XferIBB:
        return plugin(self._xmpp, "xfer_ibb", XferIBB)

    @property
    def trust(self) -> TrustStore:
        return self.otr.trust

    def event(self, name: str, data: object) -> None:
        """Raise a slixmpp event on the client (``xfer_offer``,
        ``xfer_notice``)."""
        self._xmpp.event(name, data)


@functools.cache
def crypto_executor() -> ThreadPoolExecutor:
    """Threads that seal or open runs of chunks in parallel (shared, lazy):
    with the calling thread, a transfer uses both cores of a small machine."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="xfer-crypto")
