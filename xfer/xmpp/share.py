"""Encrypted shared folders: the ``xfer_share`` slixmpp plugin
(spec/share.md).

One client shares a directory with the accounts it names
(:meth:`XferShare.share`); their clients list it
(:meth:`XferShare.list_shared`) and fetch files or subtrees of it
(:meth:`XferShare.fetch`). Requests and replies ride inside OTR (TLV 8,
xfer's use, kinds 4 and 5); each file comes as an ordinary xfer transfer,
offered by the sharer, accepted by the fetcher because it asked for it.

Load it after ``xfer_transfer`` (which it depends on)::

    import xfer.xmpp.share
    client.register_plugin("xfer_share", module=xfer.xmpp.share)
    shares = client.plugin["xfer_share"]
    handle = shares.share("photos/", ["bob@example.org"])    # serves until closed
    entries = await shares.list_shared("alice@example.org", "2024")
    result = await shares.fetch("alice@example.org", ["2024"], "Downloads/")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from slixmpp.plugins.base import BasePlugin, register_plugin

import xfer.xmpp.transfer as _transfer
from xfer.aio.shared import HashCache, SharedFolder
from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.transfer.refusals import RefusalLimit
from xfer.transfer.share import (
    RefusalCode,
    ShareRefused,
    ShareRequest,
    decode_share,
    request_id_of,
)
from xfer.xmpp._slixmpp import plugin
from xfer.xmpp.fetching import FetchedFile, Fetcher, FetchResult
from xfer.xmpp.otr import XferOTR
from xfer.xmpp.room_share import RoomMembers
from xfer.xmpp.serving import ShareEvent, Sharer, refuse

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from xfer.aio.bytestream import ProgressCallback
    from xfer.otr.session import Session
    from xfer.transfer.share import ShareEntry

__all__ = ["FetchResult", "FetchedFile", "ShareEvent", "Sharer", "XferShare"]

log = logging.getLogger(__name__)

#: The hash cache's file in the identity directory.
HASH_CACHE = "share-hashes.json"

register_plugin(_transfer.XferTransfer)


class XferShare(BasePlugin):
    """``client.register_plugin("xfer_share", config, module=xfer.xmpp.share)``.

    Config:
        max_fetches: files sent to one account at once (2); the rest wait.
        max_requests: requests of one account under way at once (8); more
            are answered ``busy``.
        hash_cache: the file that keeps the SHA-256 of shared files (default:
            ``share-hashes.json`` in the identity directory; None and no
            identity: kept in memory only).
    """

    name = "xfer_share"
    description = "Encrypted shared folders (xfer)"
    dependencies: ClassVar[set[str]] = {"xfer_transfer", "xfer_otr"}
    default_config: ClassVar[dict[str, object]] = {
        "max_fetches": 2,
        "max_requests": 8,
        "hash_cache": None,
    }

    def plugin_init(self) -> None:
        self._sharer: Sharer | None = None
        #: The refusals this client sends, however many it is asked for
        #: (spec/share.md section 5): one budget for all its shares.
        self.refusals = RefusalLimit()
        transfer = self.transfer
        self._fetcher = Fetcher(
            transfer,
            self.otr,
            answer_timeout=lambda: float(transfer.config["connect_timeout"]),
            idle_timeout=lambda: float(transfer.config["offer_timeout"]),
        )
        self.otr.on_share = self._on_share
        # A sharer that lost our session renews it: requests go again.
        self.xmpp.add_event_handler("xfer_otr_secure", self._on_secure)
        transfer.add_offer_taker(self._fetcher.take)

    @property
    def transfer(self) -> _transfer.XferTransfer:
        return plugin(self.xmpp, "xfer_transfer", _transfer.XferTransfer)

    @property
    def otr(self) -> XferOTR:
        return plugin(self.xmpp, "xfer_otr", XferOTR)

    def _on_secure(self, secure: tuple[str, bytes]) -> None:
        self._fetcher.on_secure(*secure)

    def _on_share(self, peer: str, session: Session, data: bytes) -> None:
        try:
            payload = decode_share(data)
        except RemoteProtocolError as exc:
            log.info("malformed share payload from %s: %s", peer, exc)
            request_id = request_id_of(data)
            if request_id is not None:  # a request we can answer: say why
                refuse(
                    self.otr,
                    self.refusals,
                    peer,
                    session,
                    ShareRefused(
                        request_id=request_id,
                        code=RefusalCode.BAD_REQUEST,
                        reason=f"malformed request: {exc}"[:400],
                    ),
                )
            return
        if not isinstance(payload, ShareRequest):
            self._fetcher.on_reply(peer, session, payload)
        elif self._sharer is None or self._sharer.closed:
            refuse(
                self.otr,
                self.refusals,
                peer,
                session,
                ShareRefused(
                    request_id=payload.request_id,
                    code=RefusalCode.NOT_SHARING,
                    reason="no folder is shared here",
                ),
            )
        elif not self.transfer.trust_as_saved():
            refuse(
                self.otr,
                self.refusals,
                peer,
                session,
                ShareRefused(
                    request_id=payload.request_id,
                    code=RefusalCode.FAILED,
                    reason="the sharer could not read its trust store",
                ),
            )
        else:
            self._sharer.handle(peer, session, payload)

    # -- sharing ---------------------------------------------------------------------

    def share(
        self,
        directory: str | os.PathLike[str],
        peers: Iterable[str],
        *,
        report: Callable[[ShareEvent], object] | None = None,
        room: bool = False,
    ) -> Sharer:
        """Serve ``directory`` to the accounts ``peers`` (bare JIDs; their
        fingerprints must be trusted) until the returned sharer is closed
        (``await sharer.close()``). One folder at a time.

        Only regular files and directories inside it are shared: no
        symbolic links, hidden names or special files; each request reads
        it afresh. ``report`` hears what was listed, sent and refused.

        Raises:
            LocalProtocolError: a folder is shared already, or no peer given.
            NotADirectoryError: ``directory`` is not a directory.
        """
        if self._sharer is not None and not self._sharer.closed:
            raise LocalProtocolError("a folder is shared already")
        cache_file = self.config["hash_cache"]
        identity = self.transfer.identity
        if cache_file is None and identity is not None:
            cache_file = Path(identity.directory) / HASH_CACHE
        folder = SharedFolder(directory, HashCache(cache_file))
        self._sharer = Sharer(
            folder=folder,
            peers=peers,
            transfer=self.transfer,
            otr=self.otr,
            max_fetches=int(self.config["max_fetches"]),
            max_requests=int(self.config["max_requests"]),
            report=report,
            room=room,
            refusals=self.refusals,
        )
        return self._sharer

    async def share_room(
        self,
        directory: str | os.PathLike[str],
        room: str,
        peers: Iterable[str] = (),
        *,
        report: Callable[[ShareEvent], object] | None = None,
    ) -> Sharer:
        """Serve ``directory`` to the accounts present in the group chat
        ``room`` (and to ``peers``) until the sharer is closed, staying in
        the room meanwhile (spec/share.md section 8). Occupants come and go
        with their presence; each request still needs a trusted
        fingerprint. ``report`` also hears ``member``, ``skipped`` (anonymous
        or untrusted, with the reason) and ``left``.

        Raises:
            NotSecure: the room would not let us in. As :meth:`share`.
        """
        sharer = self.share(directory, peers, report=report, room=True)
        members = RoomMembers(
            self.xmpp,
            room,
            sharer,
            lambda jid: bool(self.otr.trust.entries(jid)),
            report,
        )
        sharer.on_close(members.leave)
        try:
            await members.join(float(self.transfer.config["connect_timeout"]))
        except BaseException:
            await sharer.close()
            raise
        return sharer

    # -- fetching ----------------------------------------------------------------------

    async def list_shared(
        self, peer: str, path: str = "", *, recursive: bool = False
    ) -> list[ShareEntry]:
        """What ``peer`` shares with us at ``path`` ("" the top; a file
        path lists that file): its children, or with ``recursive`` every
        descendant, sorted by path. Asks as many pages as it takes.

        Raises:
            SharingRefused: the peer refused (``code``: not-allowed,
            not-found, not-sharing, busy...). UntrustedPeer: its fingerprint
            is not trusted. TransferTimeout: no answer (no xfer share
            running there). PeerOffline, NotSecure: see ``secure``.
            RemoteProtocolError: a listing outside what was asked.
        """
        return await self._fetcher.listing(peer, path, recursive=recursive)

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
        """Fetch files or whole subtrees (``paths`` of the share) from
        ``peer`` into the directory ``dest``, keeping their relative folders
        (names made safe; a taken name gets a number unless ``overwrite``).
        Each file is verified like any transfer, and one whose earlier fetch
        broke off goes on from what was kept. ``progress(path)`` gives each
        file's progress callback; ``on_file`` hears of each file stored.

        Returns what arrived and what did not (``FetchResult.ok``); a path
        the share does not hold (or one with too many files) is one of
        those that did not, with the sharer's reason.

        Raises:
            SharingRefused: the peer refused the fetch (not-allowed,
            not-sharing, busy, bad-request). UntrustedPeer, TransferTimeout,
            NotSecure: as for :meth:`list_shared`.
        """
        return await self._fetcher.fetch(
            peer,
            list(paths),
            Path(dest),
            overwrite=overwrite,
            progress=progress,
            on_file=on_file,
        )


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_share = XferShare
