"""``xfer receive``: wait for offers, vet each (the rules, or a question), and
save it where a safe name puts it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from xfer_cli.account import (
    account_options,
    candidate_config,
    candidate_options,
    connect,
    run,
)
from xfer_cli.commands.piping import to_output
from xfer_cli.commands.send import path_taken
from xfer_cli.main import CommandError, report_only
from xfer_cli.output import Output, json_option, quiet_option, quoted
from xfer_cli.params import DurationType, SizeType
from xfer_cli.progress import format_bytes

from xfer.aio.placement import free_name
from xfer.display import shown
from xfer.errors import XferError
from xfer.jid import bare_jid
from xfer.names import safe_parts
from xfer.notices import PeerMessage
from xfer.otr.fingerprint import format_fingerprint
from xfer.xmpp.versions import named_versions

if TYPE_CHECKING:
    import xfer
    from xfer.notices import Notice
    from xfer.xmpp.transfer import IncomingOffer

__all__ = ["receive"]

#: The most characters of a peer's OTR text shown on its line (escapes
#: included); ``--json`` carries the text as the library kept it.
TEXT_LIMIT = 500


def _destination(directory: Path, name: str, overwrite: bool) -> Path:
    """Where an offered name lands under ``directory``: sanitised components,
    parent directories created (never through a symbolic link), a numbered
    name if taken (unless ``overwrite``)."""
    parts = safe_parts(name)
    root = directory.resolve()
    parent = root
    for part in parts[:-1]:
        parent = parent / part
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise CommandError(f"{parent} is in the way (not a plain directory)")
        parent.mkdir(mode=0o755, exist_ok=True)
    target = free_name(parent, parts[-1], overwrite)
    if overwrite and target.is_dir():
        raise CommandError(f"{target} is a directory")
    assert target.resolve().is_relative_to(root)
    return target


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        answer = sys.stdin.readline().strip().lower()
        click.echo(f"{question} [y/N]: {answer}", err=True)
        return answer in ("y", "yes")
    return bool(click.confirm(question, default=False, err=True))


def _unsupported_line(peer: str, versions: frozenset[int]) -> str:
    """What 'xfer receive' says of a peer whose client offered OTR only in
    versions xfer does not speak."""
    return (
        f"{shown(peer)} cannot exchange files with you: its client offers only "
        f"OTR {named_versions(versions)}, and xfer needs version 3 (it was told so)"
    )


async def _report_unsupported(client: xfer.Client, out: Output) -> None:
    """Say so of every peer whose OTR is too old, as they come (each account
    once an hour at most: the library keeps that bound)."""
    while True:
        peer, versions = await client.next_unsupported_peer()
        out.say(_unsupported_line(peer, versions))
        out.event("unsupported", peer=peer, versions=sorted(versions))


@dataclass(frozen=True, kw_only=True)
class _Rules:
    """What 'xfer receive' was told about which offers to take, and where."""

    sender: str | None
    directory: Path
    yes: bool
    overwrite: bool
    max_size: int | None


async def _handle(offer: IncomingOffer, rules: _Rules, out: Output) -> None:
    """Show one offer, decide (rules, or ask), and receive or decline it."""
    peer_bare = bare_jid(offer.peer)
    fingerprint = format_fingerprint(offer.fingerprint)
    # The SHA-256 comes after the data (an older sender's offer carries it).
    known = "" if offer.sha256 is None else f", SHA-256 {offer.sha256.hex()[:16]}..."
    out.say(
        f"{shown(offer.peer)} offers {quoted(offer.name)}: {format_bytes(offer.size)}, "
        f"{shown(offer.media_type)}{known}"
    )
    out.say(
        f"  fingerprint {fingerprint}: "
        + (
            "trusted"
            if offer.trusted
            else "NOT TRUSTED (compare it with them, "
            "then 'xfer trust', or run 'xfer verify')"
        )
    )
    out.event(
        "offer",
        peer=offer.peer,
        name=offer.name,
        size=offer.size,
        sha256=None if offer.sha256 is None else offer.sha256.hex(),
        fingerprint=fingerprint,
        trusted=offer.trusted,
    )
    why = None
    if rules.sender is not None and peer_bare != bare_jid(rules.sender):
        why = f"not from {rules.sender}"
    elif rules.max_size is not None and offer.size > rules.max_size:
        why = f"larger than --max-size {format_bytes(rules.max_size)}"
    elif shutil.disk_usage(rules.directory).free < offer.size + (16 << 20):
        why = "not enough free space"
    elif rules.yes and not offer.trusted:
        why = "untrusted peer (--yes accepts only trusted ones)"
    elif not rules.yes and not await asyncio.to_thread(
        _ask, "Accept this file?" if offer.trusted else "Accept from an UNTRUSTED peer?"
    ):
        why = "declined"
    if why is not None:
        await offer.decline(why if why != "declined" else None)
        out.say(f"declined {quoted(offer.name)}: {shown(why)}")
        out.event("declined", peer=offer.peer, name=offer.name, why=why)
        return
    dest = await asyncio.to_thread(
        _destination, rules.directory, offer.name, rules.overwrite
    )
    kept = await asyncio.to_thread(offer.resumes_from, dest)
    if kept:
        out.say(
            f"resuming {quoted(offer.name)}: {format_bytes(kept)} of "
            f"{format_bytes(offer.size)} were kept from an earlier try"
        )
        out.event("resuming", peer=offer.peer, name=offer.name, kept=kept)
    progress = out.progress(dest.name)
    started = time.perf_counter()
    try:
        await offer.accept(dest, overwrite=rules.overwrite, progress=progress)
    except (XferError, OSError) as exc:
        progress.close()
        out.event("failed", peer=offer.peer, name=offer.name, error=str(exc))
        raise
    progress.close()
    seconds = time.perf_counter() - started
    route = offer.route
    # The path the data took, as the sender says it (its last part, after a break).
    path = "" if route is None else f"{path_taken(route.kind, route.via)}, "
    out.say(
        f"saved {shown(str(dest), limit=None)} ({format_bytes(offer.size)}, "
        f"{path}{offer.size / max(seconds, 1e-9) / 1e6:.1f} MB/s, SHA-256 verified)"
    )
    out.event(
        "received",
        peer=offer.peer,
        name=offer.name,
        path=str(dest),
        size=offer.size,
        sha256=None if offer.sha256 is None else offer.sha256.hex(),
        seconds=round(seconds, 3),
        transport=None if route is None else route.kind,
        via=None if route is None else route.via,
    )


def _show_notice(notice: Notice, out: Output) -> None:
    """One line for what a peer sent that is not an offer xfer takes.

    Each field a peer chose is escaped and capped. How many lines a flood
    can print is bounded by the library's rate limit (``xfer.notices``): a
    few at once and then one every few seconds per account, about one a
    second in all; what it held back is counted on the next line.
    """
    peer = shown(notice.peer)
    if notice.suppressed:
        out.say(f"({notice.suppressed} more from {peer} not shown: too many)")
    if isinstance(notice, PeerMessage):
        how = "in OTR" if notice.trusted else "in OTR, fingerprint NOT TRUSTED"
        out.say(f"{peer} says ({how}): {shown(notice.text, limit=TEXT_LIMIT)}")
        out.event(
            "message",
            peer=notice.peer,
            text=notice.text,
            cut=notice.cut,
            fingerprint=None
            if notice.fingerprint is None
            else format_fingerprint(notice.fingerprint),
            trusted=notice.trusted,
            suppressed=notice.suppressed,
        )
        return
    what = "a file" if notice.name is None else quoted(notice.name)
    size = "" if notice.size is None else f" ({format_bytes(notice.size)})"
    out.say(f"{peer} offered {what}{size} unencrypted; refused: {notice.reason}")
    out.event(
        "refused",
        peer=notice.peer,
        name=notice.name,
        size=notice.size,
        via=notice.via,
        why=notice.reason,
        suppressed=notice.suppressed,
    )


async def _show_notices(client: xfer.Client, out: Output) -> None:
    """Show notices as they come, until cancelled."""
    while True:
        _show_notice(await client.next_notice(), out)


@click.command()
@click.option("--from", "sender", metavar="JID", help="Accept offers only from JID.")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where files go (created if missing).",
)
@click.option(
    "--yes", "-y", is_flag=True, help="Accept offers from trusted peers without asking."
)
@click.option("--overwrite", is_flag=True, help="Replace files with the same name.")
@click.option("--once", is_flag=True, help="Exit after one offer.")
@click.option(
    "--stdout",
    "to_stdout",
    is_flag=True,
    help="Take one offer (a stream from 'xfer send -', or a file), write its "
    "plaintext to standard output, and exit.",
)
@click.option(
    "--max-size",
    type=SizeType(),
    help="Decline files larger than this (e.g. 500M, 2G).",
)
@click.option(
    "--keep-partial",
    type=DurationType(),
    default="7d",
    show_default=True,
    help="Keep the verified part of a transfer that broke off (hidden, "
    "beside the file) this long, so that sending the same file again goes "
    "on from there; 0 keeps nothing.",
)
@account_options
@candidate_options
@quiet_option
@json_option
def receive(
    sender: str | None,
    directory: str,
    yes: bool,
    overwrite: bool,
    once: bool,
    to_stdout: bool,
    max_size: int | None,
    keep_partial: float,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    addresses: tuple[tuple[str, int | None], ...],
    no_local_addresses: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Wait for files and save them in --dir.

    Each offer shows what the sender's OTR message says (name, size, type)
    and whether the sender's fingerprint is trusted, and asks
    before accepting, unless --yes (which never accepts an untrusted peer).
    Names are made safe (no path escapes, hidden files or device names;
    taken names get a number). A file appears only once it is verified:
    every chunk, and its SHA-256 against the one the sender computed as it
    sent it.

    Text a peer sends inside OTR is shown ("PEER says (in OTR): ..."), and
    so are files offered without end-to-end encryption (plain Jingle, or
    legacy stream initiation), which are refused ("PEER offered 'NAME'
    (SIZE) unencrypted; refused: ..."); a flood of either is cut short.

    A transfer that breaks off (network, either side killed) goes on by
    itself when the sender comes back within a couple of minutes; later,
    sending the same file again continues where it stopped (--keep-partial).
    Ctrl-C stops.

    With --stdout, one offer is taken and its plaintext goes to standard
    output (everything else goes to stderr), then xfer exits: a stream
    ('xfer send -') chunk by chunk, each written only once it verified; a
    file once all of it verified. A stream that breaks off or does not
    verify ends with a non-zero exit and "stream cut after N verified
    bytes": exactly N bytes were written, and they are not the whole
    stream ('xfer receive --stdout | tar x' then fails visibly with
    'set -o pipefail').

    A contact whose chat client speaks only OTR version 2 cannot send files
    with xfer (they need version 3): a line says who, and their client is
    told so in a plain message.

    Your account: --jid or XFER_JID; the password from XFER_PASSWORD, the
    config file (~/.config/xfer/config.toml: jid, password, host, port, tls)
    or a prompt.
    """
    if to_stdout and as_json:
        raise click.UsageError("--json writes to standard output: not with --stdout")
    out = Output(quiet=quiet, as_json=as_json)
    rules = _Rules(
        sender=sender,
        directory=Path(directory),
        yes=yes,
        overwrite=overwrite,
        max_size=max_size,
    )
    rules.directory.mkdir(parents=True, exist_ok=True)

    async def job() -> int:
        client = await connect(
            jid,
            host,
            port,
            tls,
            accept_untrusted=True,
            keep_partial=keep_partial > 0,
            partial_max_age=keep_partial,
            # A stream's size comes at its end: the library holds it to this.
            max_size=max_size if to_stdout else None,
            **candidate_config(addresses, no_local_addresses),
        )
        notices: asyncio.Future[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            what = "one offer, to standard output," if to_stdout else "files"
            out.say(
                f"waiting for {what} as {shown(client.jid)} "
                f"(fingerprint {client.fingerprint}); Ctrl-C to stop"
            )
            out.event("ready", jid=client.jid, fingerprint=client.fingerprint)
            # Alongside the offers: what else peers send (text inside OTR,
            # refused unencrypted offers), one line each.
            notices = asyncio.ensure_future(_show_notices(client, out))
            watcher = asyncio.create_task(_report_unsupported(client, out))
            while True:
                offer = await client.next_offer()
                busy[0] = True
                if to_stdout:
                    await to_output(
                        offer, sender=rules.sender, yes=rules.yes, ask=_ask, out=out
                    )
                    return 0
                if once:
                    await _handle(offer, rules, out)
                    return 0
                try:
                    await _handle(offer, rules, out)
                except (XferError, OSError) as exc:
                    # One failed file does not stop the receiver; say why.
                    report_only(exc)
                busy[0] = False
        finally:
            if notices is not None:
                notices.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            with contextlib.suppress(Exception):
                await client.close()

    busy = [False]  # a transfer is under way (Ctrl-C then interrupts it)
    try:
        run(job())
    except KeyboardInterrupt:
        if busy[0]:
            raise
        out.say("stopped")  # Ctrl-C while waiting is the normal way to stop
        out.event("stopped")
