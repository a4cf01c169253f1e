"""The library API: one connected account that sends and receives files.

    client = await xfer.connect("alice@example.org", password, identity="~/xfer-id")
    result = await client.send_file("bob@example.org", "report.pdf")
    offer = await client.next_offer()
    path = await offer.accept("downloads/")
    result = await client.send_stream("bob@example.org", reader)  # no size up front
    async for piece in await offer.accept_stream():   # offer.is_stream: verified bytes
        ...
    notice = await client.next_notice()   # text in OTR, a refused plain offer
    await client.close()

Under it is a slixmpp client with the ``xfer_transfer`` plugin (and the
plugins it loads); :attr:`Client.xmpp` gives access to it. An existing
slixmpp application loads the plugin itself instead (see
:mod:`xfer.xmpp.transfer`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import xfer.xmpp.share as _share
import xfer.xmpp.transfer as _transfer
from xfer.aio.bytestream import no_progress
from xfer.aio.stream import FLUSH_INTERVAL
from xfer.otr.fingerprint import format_fingerprint, parse_fingerprint
from xfer.otr.trust import SMPResult, Verification
from xfer.store import IdentityStore
from xfer.xmpp._slixmpp import plugin
from xfer.xmpp.client import XferClient
from xfer.xmpp.otr import XferOTR
from xfer.xmpp.share import XferShare
from xfer.xmpp.transfer import XferTransfer

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from xfer.aio.files import ProgressCallback
    from xfer.notices import Notice
    from xfer.transfer.share import ShareEntry
    from xfer.xmpp.share import FetchedFile, FetchResult, ShareEvent, Sharer
    from xfer.xmpp.transfer import IncomingOffer, ManyResult, SendResult
    from xfer.xmpp.transfer.streaming import Source

__all__ = ["Client", "connect"]


class Client:
    """A connected account (see :func:`connect`)."""

    def __init__(self, xmpp: XferClient) -> None:
        self.xmpp = xmpp

    @property
    def _transfer(self) -> XferTransfer:
        return plugin(self.xmpp, "xfer_transfer", XferTransfer)

    @property
    def _share(self) -> XferShare:
        return plugin(self.xmpp, "xfer_share", XferShare)

    @property
    def _otr(self) -> XferOTR:
        return plugin(self.xmpp, "xfer_otr", XferOTR)

    @property
    def jid(self) -> str:
        """Our full JID."""
        return str(self.xmpp.boundjid.full)

    @property
    def fingerprint(self) -> str:
        """Our OTR fingerprint, as people compare it (five groups of eight)."""
        key = self._otr.account.private_key
        return format_fingerprint(key.public.fingerprint)

    # -- trust ------------------------------------------------------------------

    def trust(self, peer: str, fingerprint: str | bytes) -> None:
        """Trust ``fingerprint`` for ``peer`` (after checking it with them)."""
        raw = (
            parse_fingerprint(fingerprint)
            if isinstance(fingerprint, str)
            else fingerprint
        )
        self._transfer.trust_as_saved()  # another process's change is kept
        store = self._otr.trust
        store.trust(peer, raw, Verification.MANUAL, now=int(time.time()))
        self._save_trust()

    def untrust(self, peer: str) -> int:
        """Forget every fingerprint trusted for ``peer``; return how many."""
        self._transfer.trust_as_saved()
        gone = self._otr.trust.untrust(peer)
        self._save_trust()
        return gone

    def _save_trust(self) -> None:
        if self._transfer.identity is not None:
            self._transfer.save_trust()

    def is_trusted(self, peer: str, fingerprint: str | bytes) -> bool:
        """Whether ``fingerprint`` is trusted for ``peer`` now (as stored)."""
        raw = (
            parse_fingerprint(fingerprint)
            if isinstance(fingerprint, str)
            else fingerprint
        )
        return self._transfer.trust_as_saved() and self._otr.trust.is_trusted(peer, raw)

    async def verify(
        self,
        peer: str,
        secret: str,
        *,
        question: str | None = None,
        timeout: float = 120,
    ) -> SMPResult:
        """Verify ``peer`` with the Socialist Millionaires' Protocol, waiting
        up to ``timeout`` seconds for its answer.

        Returns ``SMPResult.SUCCEEDED`` (both typed the same secret: the
        fingerprint is trusted), ``FAILED`` (the secrets differ, or someone
        is in the middle: the fingerprint is no longer trusted, however it
        was before) or ``ABORTED`` (either side gave up: trust unchanged).
        The result is true only for a success.

        Raises:
            VerificationTimeout: no outcome within ``timeout`` seconds (the
            exchange was given up); PeerOffline, NotSecure: see
            :meth:`secure`.
        """
        full, _ = await self._otr.secure(peer)
        return await self._otr.verify(
            full, secret.encode(), question=question, timeout=timeout
        )

    async def next_verification(
        self, timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        """The next SMP verification a peer started: (its JID, its question);
        with ``peer`` (a bare or full JID), only one from that peer (others
        stay queued).

        Raises:
            VerificationTimeout: none within ``timeout`` seconds.
        """
        return await self._otr.next_question(timeout, peer=peer)

    async def next_unsupported_peer(
        self, timeout: float | None = None
    ) -> tuple[str, frozenset[int]]:
        """The next peer whose client offered OTR only in versions xfer does
        not speak (version 2, say), so that no file can go either way: (its
        full JID, the versions it offered). It was told in a plain message
        that xfer needs version 3. Each account is reported once an hour at
        most; the report is as unauthenticated as any plain message.

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        return await self._otr.next_unsupported(timeout)

    async def answer_verification(
        self, peer: str, secret: str, *, timeout: float = 120
    ) -> SMPResult:
        """Answer a peer's verification (from :meth:`next_verification`),
        waiting up to ``timeout`` seconds for the outcome; the result and
        what it does to trust are those of :meth:`verify` (``ABORTED`` at
        once if the peer gave the verification up meanwhile).

        Raises:
            VerificationTimeout: no outcome within ``timeout`` seconds.
        """
        return await self._otr.answer(peer, secret.encode(), timeout=timeout)

    async def secure(self, peer: str, *, wait: bool = False) -> tuple[str, str, bool]:
        """Set up OTR with ``peer``: (its full JID, its fingerprint as people
        compare it, whether that fingerprint is trusted).

        By default, to send to it: where ``peer`` can receive is asked
        first, and an offline peer or one without xfer fails within seconds.
        With ``wait``, as a verification does (both users start one, not at
        the same moment), the OTR query waits for the peer to come, up to
        the connect timeout.

        Raises:
            PeerOffline, PeerIncapable, NotSecure: see
            :meth:`xfer.xmpp.transfer.XferTransfer.secure` (with ``wait``:
            NotSecure only).
        """
        if wait:
            timeout = float(self._transfer.config["connect_timeout"])
            full, session = await self._otr.secure(peer, timeout=timeout)
        else:
            full, session = await self._transfer.secure(peer)
        raw = session.their_fingerprint
        assert raw is not None
        return full, format_fingerprint(raw), self._otr.trust.is_trusted(full, raw)

    # -- transfers --------------------------------------------------------------

    async def send_file(
        self,
        peer: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> SendResult:
        """Send a file; see :meth:`xfer.xmpp.transfer.XferTransfer.send_file`."""
        return await self._transfer.send_file(peer, path, name=name, progress=progress)

    async def send_file_to_many(
        self,
        peers: Iterable[str],
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Callable[[str], ProgressCallback] | None = None,
    ) -> ManyResult:
        """Send a file to several peers at once, each under its own keys,
        reading it once; a mapping of who got it and who did not (never
        raises for one peer); see
        :meth:`xfer.xmpp.transfer.XferTransfer.send_file_to_many`."""
        return await self._transfer.send_file_to_many(
            peers, path, name=name, progress=progress
        )

    async def is_room(self, jid: str) -> bool:
        """Whether ``jid`` is a group chat room (XEP-0045)."""
        return await self._transfer.is_room(jid)

    async def room_recipients(self, room: str) -> tuple[list[str], dict[str, str]]:
        """Who in ``room`` can get a file (real JIDs shown by the room, with
        a trusted fingerprint), and who not, with the reason; see
        :meth:`xfer.xmpp.transfer.XferTransfer.room_recipients`. Send with
        :meth:`send_file_to_many`."""
        return await self._transfer.room_recipients(room)

    async def send_stream(
        self,
        peer: str,
        source: Source,
        *,
        name: str = "stream",
        live: bool = False,
        flush_interval: float = FLUSH_INTERVAL,
        progress: ProgressCallback = no_progress,
    ) -> SendResult:
        """Send the bytes of ``source`` (an async iterable of bytes, or an
        :class:`asyncio.StreamReader`) until it ends, with no size known up
        front; see :meth:`xfer.xmpp.transfer.XferTransfer.send_stream`. The
        result's ``size`` and ``sha256`` are what the receiver verified.

        Raises:
            StreamCut: the stream broke off ("stream cut after N verified
            bytes"); it is not offered again.
        """
        return await self._transfer.send_stream(
            peer,
            source,
            name=name,
            live=live,
            flush_interval=flush_interval,
            progress=progress,
        )

    async def next_offer(self, timeout: float | None = None) -> IncomingOffer:
        """The next file or stream offered to us; ``accept`` (a file),
        ``accept_stream`` (``offer.is_stream``) or ``decline`` it."""
        return await self._transfer.next_offer(timeout)

    async def offers(self) -> AsyncIterator[IncomingOffer]:
        """Every file offered to us, as they come."""
        while True:
            yield await self._transfer.next_offer()

    # -- shared folders (spec/share.md) -------------------------------------------

    def share(
        self,
        directory: str | os.PathLike[str],
        *,
        with_: Iterable[str],
        report: Callable[[ShareEvent], object] | None = None,
    ) -> Sharer:
        """Serve ``directory`` to the accounts ``with_`` (their fingerprints
        trusted) until ``await sharer.close()``; see
        :meth:`xfer.xmpp.share.XferShare.share`."""
        return self._share.share(directory, with_, report=report)

    async def share_room(
        self,
        directory: str | os.PathLike[str],
        room: str,
        *,
        with_: Iterable[str] = (),
        report: Callable[[ShareEvent], object] | None = None,
    ) -> Sharer:
        """Serve ``directory`` to the members of the group chat ``room``
        (as they come and go; trusted fingerprints only) and to ``with_``;
        see :meth:`xfer.xmpp.share.XferShare.share_room`."""
        return await self._share.share_room(directory, room, with_, report=report)

    async def list_shared(
        self, peer: str, path: str = "", *, recursive: bool = False
    ) -> list[ShareEntry]:
        """What ``peer`` shares with us at ``path``; see
        :meth:`xfer.xmpp.share.XferShare.list_shared`."""
        return await self._share.list_shared(peer, path, recursive=recursive)

    async def fetch(
        self,
        peer: str,
        paths: Iterable[str],
        dest: str | os.PathLike[str] = ".",
        *,
        overwrite: bool = False,
        progress: Callable[[str], ProgressCallback] | None = None,
        on_file: Callable[[FetchedFile], object] | None = None,
    ) -> FetchResult:
        """Fetch files or subtrees of ``peer``'s share into ``dest``; see
        :meth:`xfer.xmpp.share.XferShare.fetch`."""
        return await self._share.fetch(
            peer, paths, dest, overwrite=overwrite, progress=progress, on_file=on_file
        )

    # -- what else peers send ----------------------------------------------------

    async def next_notice(self, timeout: float | None = None) -> Notice:
        """The next thing a peer sent that is not a file xfer takes: a
        :class:`~xfer.notices.PeerMessage` (text inside OTR, with the
        fingerprint it came under and whether it is trusted) or a
        :class:`~xfer.notices.RefusedOffer` (a file offered without
        end-to-end encryption, over Jingle or legacy stream initiation,
        which was refused: who, the name and size it said).

        Every field a peer chose is hostile: show it through
        :func:`xfer.display.shown`. A flood is bounded: a few notices at
        once and then one every few seconds per account, about one a second
        in all; the next notice that gets through says how many of its
        account's were held back (``suppressed``), and at most a few dozen
        wait for you (the oldest go first).

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        return await self._transfer.next_notice(timeout)

    async def notices(self) -> AsyncIterator[Notice]:
        """Every notice (see :meth:`next_notice`), as they come."""
        while True:
            yield await self._transfer.next_notice()

    # -- lifetime -----------------------------------------------------------------

    async def close(self) -> None:
        """End the OTR conversations, disconnect, and stop the SMP worker."""
        for full, _ in self._otr.account.secure_sessions():
            self._otr.end(full)
        await self.xmpp.stop()
        self._otr.plugin_end()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(
    jid: str,
    password: str,
    *,
    identity: str | os.PathLike[str] | IdentityStore,
    host: str | None = None,
    port: int | None = None,
    tls: str = "starttls",
    verify_tls: bool = True,
    ca_file: str | os.PathLike[str] | None = None,
    **config: object,
) -> Client:
    """Connect an account, ready to send and receive files.

    Args:
        jid: the account (a resource is chosen by the server if none given).
        password: its password.
        identity: the directory (or :class:`~xfer.store.IdentityStore`) that
            holds the OTR key, instance tag and trusted fingerprints; the key
            is created on first use.
        host, port: the server (default: found from the JID's domain; the
            port 5223 for direct TLS, else 5222).
        tls: "starttls" (default), "direct", or "none" (local test servers).
        ca_file: a PEM file of the CAs that may sign the server's
            certificate, trusted instead of the system's.
        config: options of the ``xfer_transfer`` plugin (``accept_untrusted``,
            ``max_size``, ``socks5_direct``, ...).

    Raises:
        AuthenticationFailed, ServerUnreachable, CertificateUntrusted,
        TLSNotOffered, TLSRequired.
    """
    store = identity if isinstance(identity, IdentityStore) else IdentityStore(identity)
    xmpp = XferClient(jid, password, tls=tls, verify_tls=verify_tls, ca_file=ca_file)
    xmpp.register_plugin(
        "xfer_transfer", {"identity": store, **config}, module=_transfer
    )
    xmpp.register_plugin("xfer_share", module=_share)
    await xmpp.start(host, port)
    return Client(xmpp)
