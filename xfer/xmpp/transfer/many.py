"""One file to several recipients: concurrent transfers, one read.

Each recipient gets a transfer of its own, exactly as
:meth:`~xfer.xmpp.transfer.sending.Sender.send` makes it: its own OTR
session and fingerprint check, its own offer with a fresh transfer id, salt
and extra symmetric key, its own Jingle session, its own verdict, its own
resume loop. Nothing secret is shared between recipients: with one key for
all, any recipient could seal chunks that another accepts as the sender's
(``spec/otr.md`` 5.5). What is shared is the plaintext read from disk:
:class:`~xfer.aio.fanout.SharedRead` reads the file once, hashes it once
(the SHA-256 each recipient's digest carries) and hands each piece to every
recipient's sealer.

The transfers run concurrently; one that fails (declined, offline,
untrusted, broken off) ends with its error in the result and the others go
on. :func:`send_to_many` returns who got what.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.aio.bytestream import no_progress
from xfer.aio.fanout import JOIN_WAIT, WINDOW, SharedRead
from xfer.errors import LocalProtocolError, XferError
from xfer.jid import bare_jid

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from xfer.aio.bytestream import ProgressCallback
    from xfer.xmpp.transfer.sending import Sender, SendResult

__all__ = ["ManyResult", "send_to_many"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ManyResult:
    """Who got the file: each recipient as named, to its
    :class:`~xfer.xmpp.transfer.sending.SendResult` or to the error that
    stopped its transfer (an :class:`~xfer.errors.XferError` or OSError)."""

    results: dict[str, SendResult | Exception] = field(default_factory=dict)
    #: Bytes read from the file in all (a single read: its size).
    bytes_read: int = 0
    #: Of those, bytes read for one recipient alone (a late start, a resume).
    bytes_read_alone: int = 0
    #: Bytes hashed where they were read (the shared read once; a late
    #: start again; a resume hashes its own, not counted here).
    bytes_hashed: int = 0

    @property
    def sent(self) -> dict[str, SendResult]:
        """The recipients that verified and stored the file."""
        return {p: r for p, r in self.results.items() if not isinstance(r, Exception)}

    @property
    def failed(self) -> dict[str, Exception]:
        """The recipients that did not get it, and why."""
        return {p: r for p, r in self.results.items() if isinstance(r, Exception)}


def recipients(peers: Iterable[str], own: str) -> list[str]:
    """``peers`` in order, each once (by bare JID, as the trust store counts
    them), without ourselves.

    Raises:
        LocalProtocolError: no recipient is left.
    """
    seen: set[str] = set()
    out: list[str] = []
    mine = bare_jid(own)
    for peer in peers:
        key = bare_jid(peer)
        if key == mine or key in seen:
            continue
        seen.add(key)
        out.append(peer)
    if not out:
        raise LocalProtocolError("no recipient (other than ourselves)")
    return out


async def send_to_many(
    sender: Sender,
    own: str,
    peers: Iterable[str],
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    media_type: str = "application/octet-stream",
    progress: Callable[[str], ProgressCallback] | None = None,
    window: int = WINDOW,
    join_wait: float = JOIN_WAIT,
    hash_once: bool = True,
) -> ManyResult:
    """Send ``path`` to each of ``peers`` (see :func:`recipients`), each
    under its own offer and keys, concurrently, reading the file once.
    ``progress(peer)`` gives each recipient's progress callback.
    ``hash_once=False`` has each recipient hash the file for itself (the
    way before the shared read hashed it; benchmarks/recipients.py
    compares the two).

    Never raises for one recipient's failure: that is its entry in the
    result. Cancelling cancels every transfer.
    """
    targets = recipients(peers, own)
    shared = SharedRead(
        path, targets, window=window, join_wait=join_wait, hashed=hash_once
    )

    async def one(peer: str) -> SendResult:
        try:
            return await sender.send(
                peer,
                path,
                name,
                media_type,
                progress(peer) if progress is not None else no_progress,
                reader=lambda start: shared.pieces(peer, start),
                read_sha256=(lambda size: shared.sha256(peer, size))
                if hash_once
                else None,
            )
        finally:
            shared.withdraw(peer)

    tasks = {peer: asyncio.ensure_future(one(peer)) for peer in targets}
    try:
        await asyncio.wait(tasks.values())
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await shared.close()
    results: dict[str, SendResult | Exception] = {}
    for peer, task in tasks.items():
        exc = task.exception()
        if exc is None:
            results[peer] = task.result()
        elif isinstance(exc, (XferError, OSError)):
            results[peer] = exc
        else:
            raise exc  # a bug, not a recipient's failure
    return ManyResult(
        results=results,
        bytes_read=shared.bytes_read,
        bytes_read_alone=shared.bytes_read_alone,
        bytes_hashed=shared.bytes_hashed,
    )
