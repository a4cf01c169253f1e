"""``xfer receive --stdout``: one offer's plaintext to standard output.

A stream is written chunk by chunk, each chunk only once it verified; a file
is received whole into a private temporary directory (verified like any
file) and then copied out. Status goes to stderr only.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from xfer_cli.commands.send import path_taken
from xfer_cli.main import EXIT_INTERRUPTED, EXIT_REFUSED, CommandError
from xfer_cli.output import Output, quoted
from xfer_cli.progress import format_bytes

from xfer.aio.stdio import output_sink
from xfer.display import shown
from xfer.jid import bare_jid
from xfer.otr.fingerprint import format_fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.aio.bytestream import ProgressCallback
    from xfer.aio.stream import Sink
    from xfer.xmpp.transfer import IncomingOffer

__all__ = ["to_output"]

#: A received file is copied to standard output in pieces of this size.
COPY_PIECE = 1 << 20


async def to_output(
    offer: IncomingOffer,
    *,
    sender: str | None,
    yes: bool,
    ask: Callable[[str], bool],
    out: Output,
) -> None:
    """Show ``offer``, decide (``sender``, ``yes``, else ``ask``), and write
    its plaintext to standard output, or decline it.

    Raises:
        StreamCut: a stream broke off or did not verify (what was written
        is exactly its verified prefix). CommandError: declined (nothing
        written). XferError, OSError: as for a file.
    """
    what = "a stream" if offer.is_stream else f"a file of {format_bytes(offer.size)}"
    trust = "trusted" if offer.trusted else "NOT TRUSTED"
    out.say(
        f"{shown(offer.peer)} offers {what}, {quoted(offer.name)} "
        f"(fingerprint {format_fingerprint(offer.fingerprint)}: {trust})"
    )
    why = None
    if sender is not None and bare_jid(offer.peer) != bare_jid(sender):
        why = f"not from {sender}"
    elif yes and not offer.trusted:
        why = "untrusted peer (--yes accepts only trusted ones)"
    elif not yes and not await asyncio.to_thread(
        ask, "Accept it?" if offer.trusted else "Accept from an UNTRUSTED peer?"
    ):
        why = "declined"
    if why is not None:
        await offer.decline(why if why != "declined" else None)
        # Nothing was written: a pipeline must not take that for the data.
        raise CommandError(
            f"declined {quoted(offer.name)}: {shown(why)}; nothing was written",
            exit_code=EXIT_REFUSED,
        )
    started = time.perf_counter()
    progress = out.progress(offer.name)
    if sys.stdout.isatty():
        # The plaintext goes to the same terminal: a progress line redrawn
        # on it would run into the data.
        progress.enabled = False
    try:
        async with output_sink(sys.stdout.fileno()) as sink:
            if offer.is_stream:
                stream = await offer.accept_stream(progress=progress)
                try:
                    sha256 = await stream.write_to(sink)
                except asyncio.CancelledError:
                    # Ctrl-C or SIGTERM: the sender heard "cancel"; what the
                    # sink took still reaches the output (as the context ends).
                    raise CommandError(
                        f"interrupted: stream cut after {stream.verified} "
                        "verified bytes",
                        exit_code=EXIT_INTERRUPTED,
                    ) from None
                size, route = stream.verified, stream.route
            else:
                size, sha256 = await _file_to(offer, sink, progress)
                route = offer.route
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    # The path the data took, as the sender says it.
    path = "" if route is None else f"{path_taken(route.kind, route.via)}, "
    out.say(
        f"wrote {quoted(offer.name)} to standard output ({format_bytes(size)}, "
        f"{path}{size / max(seconds, 1e-9) / 1e6:.1f} MB/s): {size} bytes verified, "
        f"SHA-256 {sha256.hex()}"
    )


async def _file_to(
    offer: IncomingOffer, sink: Sink, progress: ProgressCallback
) -> tuple[int, bytes]:
    """Receive a file offer whole (verified) into a private temporary
    directory, then copy it to ``sink``; its size and SHA-256."""
    with tempfile.TemporaryDirectory(prefix="xfer-") as tmp:
        path = await offer.accept(Path(tmp), progress=progress)
        assert offer.sha256 is not None
        with path.open("rb") as f:
            while piece := await asyncio.to_thread(f.read, COPY_PIECE):
                await sink(piece)
        return offer.size, offer.sha256
