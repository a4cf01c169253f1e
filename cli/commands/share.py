"""``xfer share``, ``xfer ls`` and ``xfer get``: encrypted shared folders
(spec/share.md). The library does the work (``xfer.Client.share``,
``list_shared``, ``fetch``); these commands parse, print and exit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import click
from xfer_cli.account import account_options, connect, identity, run
from xfer_cli.main import EXIT_ERROR, EXIT_USAGE, CommandError
from xfer_cli.output import Output, json_option, quiet_option, quoted
from xfer_cli.progress import format_bytes

from xfer.display import shown
from xfer.errors import LocalProtocolError, XferError
from xfer.jid import bare_jid
from xfer.transfer.share import EntryType
from xfer.transfer.share_paths import check_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from xfer_cli.progress import Progress

    from xfer.transfer.share import ShareEntry
    from xfer.xmpp.share import FetchedFile, ShareEvent

__all__ = ["get", "ls", "share"]


def share_path(raw: str) -> str:
    """A path of a share as typed ("2024/", "./a", "/") in the form the
    protocol takes ("2024", "a", "")."""
    path = raw.strip("/")
    while path.startswith("./"):
        path = path[2:]
    if path == ".":
        path = ""
    try:
        check_path(path, root=True)
    except LocalProtocolError as exc:
        msg = f"{raw!r} is not a path in a shared folder: {exc}"
        raise CommandError(msg, exit_code=EXIT_USAGE) from None
    return path


def account_of(raw: str, example: str = "bob@example.org") -> str:
    """The bare JID ``raw`` names, or a usage error that shows the form."""
    try:
        return bare_jid(raw)
    except LocalProtocolError:
        msg = f"{raw!r} is not a JID: write user@server ({example}, say)"
        raise CommandError(msg, exit_code=EXIT_USAGE) from None


def split_target(target: str) -> tuple[str, str]:
    """``JID[/sub/path]`` -> (bare JID, share path)."""
    account, _, path = target.partition("/")
    try:
        bare_jid(account)
    except LocalProtocolError:
        msg = (
            f"{target!r} does not start with a JID: write user@server, then "
            "the path in the share if any (alice@example.org/2024, say)"
        )
        raise CommandError(msg, exit_code=EXIT_USAGE) from None
    return account, share_path(path)


@click.command()
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--with",
    "peers",
    metavar="JID",
    multiple=True,
    help="Who may list and fetch (repeat the option for more); their "
    "fingerprints must be trusted.",
)
@click.option(
    "--room",
    metavar="ROOM",
    help="Share with the members of a group chat whose real JID the room "
    "shows and whose fingerprint you trust, as they come and go.",
)
@account_options
@quiet_option
@json_option
def share(
    directory: Path,
    peers: tuple[str, ...],
    room: str | None,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Share DIRECTORY with the JIDs given, until Ctrl-C.

    \b
      alice: xfer share ~/photos --with bob@example.org
      bob:  xfer ls alice@example.org       (or alice@example.org/2024)
      bob:  xfer get alice@example.org 2024/ --dir ~/Downloads

    Everything goes end-to-end encrypted inside OTR, only to the
    fingerprints you trust ('xfer trust', 'xfer verify'): the servers learn
    neither names, sizes, nor what was fetched. Only regular files and
    folders inside DIRECTORY are shared: no symbolic links (even those that
    point inside), no hidden files or folders (names starting with '.'), no
    special files; asking for one of them, or asking from an account not
    named, gets a refusal. Each request reads DIRECTORY afresh, so what you
    add or remove meanwhile shows at once.
    """
    if not peers and room is None:
        raise CommandError(
            "name who may fetch: --with JID or --room ROOM", exit_code=EXIT_USAGE
        )
    accounts = sorted({account_of(p) for p in peers})
    room = None if room is None else account_of(room, "photos@conference.example.org")
    out = Output(quiet=quiet, as_json=as_json)

    def report(event: ShareEvent) -> None:
        what = {
            "listed": "listed",
            "sending": "is fetching",
            "sent": "got",
            "failed": "did not get",
            "refused": "was refused",
            "member": "is in the room: may fetch",
            "skipped": "is in the room but skipped:",
            "left": "left the room: may no longer fetch",
            "rejoined": "joined again",
        }.get(event.kind, event.kind)
        where = (
            f" {quoted(event.path or '/')}"
            if event.path or event.kind == "listed"
            else ""
        )
        detail = f" ({shown(event.detail)})" if event.detail else ""
        if event.kind == "skipped":
            detail = f" {shown(event.detail, limit=None)}"
        out.say(f"{shown(event.peer)} {what}{where}{detail}")
        out.event(event.kind, peer=event.peer, path=event.path, detail=event.detail)

    for account in untrusted(accounts):
        out.say(
            f"note: you trust no key of {account} yet: its requests are refused "
            f"until you do ('xfer trust {account} FINGERPRINT' or 'xfer verify "
            f"{account}'; no restart needed)"
        )
        out.event("untrusted", peer=account)

    async def job() -> int:
        client = await connect(jid, host, port, tls)
        if room is None:
            sharer = client.share(directory, with_=accounts, report=report)
        else:
            try:
                sharer = await client.share_room(
                    directory, room, with_=accounts, report=report
                )
            except BaseException:
                await client.close()
                raise
        try:
            whom = [*accounts, *([f"the members of {room}"] if room else [])]
            out.say(
                f"sharing {shown(str(sharer.folder.root), limit=None)} with "
                f"{', '.join(whom)} as {shown(client.jid)}; Ctrl-C stops"
            )
            out.event(
                "sharing", root=str(sharer.folder.root), peers=accounts, room=room
            )
            await asyncio.Event().wait()
        finally:
            await sharer.close()
            await client.close()
        return 0

    try:
        run(job())
    except KeyboardInterrupt:
        out.say("stopped sharing")


def untrusted(accounts: list[str]) -> list[str]:
    """Those of ``accounts`` for which no fingerprint is trusted (as saved)."""
    try:
        store = identity().trust_store()
    except (OSError, XferError) as exc:
        raise CommandError(f"cannot read the trust store: {exc}") from None
    return [a for a in accounts if not store.entries(a)]


def _date(mtime: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))


@click.command()
@click.argument("target", metavar="JID[/PATH]")
@click.option(
    "--recursive", "-r", is_flag=True, help="Everything below, not only the children."
)
@account_options
@json_option
def ls(
    target: str,
    recursive: bool,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    as_json: bool,
) -> None:
    """List what JID shares with you (at PATH): size, date (UTC), media
    type, SHA-256 (once the sharer has computed it) and name.

    What follows the first '/' is a path in the shared folder, not an
    XMPP resource: 'xfer ls alice@example.org/2024/summer'. The sharer must
    be running 'xfer share' with you.
    """
    peer, path = split_target(target)
    out = Output(as_json=as_json)

    async def job() -> int:
        client = await connect(jid, host, port, tls)
        try:
            entries = await client.list_shared(peer, path, recursive=recursive)
        finally:
            await client.close()
        if out.as_json:
            for entry in entries:
                _print_entry(entry, out)
        elif not entries:
            what = quoted(path) if path else "the shared folder"
            out.say(f"{what} is empty")
        for line in [] if out.as_json else listing_lines(entries):
            click.echo(line)
        return 0

    run(job())


def _print_entry(entry: ShareEntry, out: Output) -> None:
    out.event(
        "entry",
        path=entry.path,
        type="directory" if entry.type is EntryType.DIRECTORY else "file",
        size=entry.size,
        mtime=entry.mtime,
        media_type=entry.media_type,
        sha256=None if entry.sha256 is None else entry.sha256.hex(),
    )


def listing_lines(entries: list[ShareEntry]) -> list[str]:
    """``xfer ls``'s lines: size, date, media type, SHA-256 and name in
    columns as wide as this listing needs (no room kept for a hash that
    none of the entries has yet)."""
    rows = []
    for entry in entries:
        directory = entry.type is EntryType.DIRECTORY
        rows.append(
            (
                "-" if directory else format_bytes(entry.size),
                _date(entry.mtime),
                shown("directory" if directory else (entry.media_type or "-")),
                entry.sha256.hex() if entry.sha256 is not None else "-",
                shown(entry.path, limit=None) + ("/" if directory else ""),
            )
        )
    media = max((len(r[2]) for r in rows), default=0)
    digest = max((len(r[3]) for r in rows), default=0)
    return [
        f"{size:>10}  {date}  {kind:<{media}}  {sha:<{digest}}  {name}"
        for size, date, kind, sha, name in rows
    ]


@click.command()
@click.argument("peer", metavar="JID")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Where to put them (created if missing).",
)
@click.option("--overwrite", is_flag=True, help="Replace files of the same name.")
@account_options
@quiet_option
@json_option
def get(
    peer: str,
    paths: tuple[str, ...],
    directory: Path,
    overwrite: bool,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Fetch files or whole folders (PATH... as 'xfer ls JID' shows them)
    that JID shares with you, into --dir with their relative folders.

    Each file is verified like any transfer; run the command again after a
    break and each file goes on from what was kept. The exit code is 0 only
    if everything arrived.
    """
    account_of(peer)
    wanted = _outermost([share_path(p) for p in paths])
    out = Output(quiet=quiet, as_json=as_json)
    directory.mkdir(parents=True, exist_ok=True)
    bars: dict[str, Progress] = {}

    def progress(path: str) -> Progress:
        bar = out.progress(path)
        bars[path] = bar
        return bar

    def stored(got: FetchedFile) -> None:
        bar = bars.pop(got.path, None)
        if bar is not None:
            bar.close()
        out.say(
            f"got {quoted(got.path)} ({format_bytes(got.size)}, SHA-256 verified) "
            f"-> {shown(str(got.local), limit=None)}"
        )
        out.event(
            "received",
            peer=peer,
            path=got.path,
            local=str(got.local),
            size=got.size,
            sha256=got.sha256.hex(),
        )

    async def job() -> int:
        client = await connect(jid, host, port, tls)
        try:
            result = await client.fetch(
                peer,
                wanted,
                directory,
                overwrite=overwrite,
                progress=progress,
                on_file=stored,
            )
        finally:
            for bar in bars.values():
                bar.close()
            await client.close()
        for path, why in result.failed:
            out.say(f"did not get {quoted(path)}: {shown(why)}")
            out.event("failed", peer=peer, path=path, error=why)
        total = len(result.stored) + len(result.failed)
        if result.failed:
            raise CommandError(
                f"{len(result.failed)} of {_files(total)} did not arrive",
                exit_code=EXIT_ERROR,
            )
        out.say(fetched_summary(wanted, result.stored, directory))
        return 0

    run(job())


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


def fetched_summary(
    wanted: list[str], stored: Sequence[FetchedFile], directory: Path
) -> str:
    """What ``xfer get`` says at the end of a fetch where nothing failed."""
    if not stored:
        asked = ", ".join(quoted(p) if p else "the shared folder" for p in wanted)
        return f"nothing to fetch: {asked} holds no files"
    line = f"{_files(len(stored))} fetched into {shown(str(directory), limit=None)}"
    renamed = sum(1 for got in stored if got.local.name != PurePosixPath(got.path).name)
    if renamed:
        line += (
            f"; {renamed} under another name (the name was taken, or is not "
            "safe here; --overwrite replaces taken names)"
        )
    return line


def _outermost(paths: list[str]) -> list[str]:
    """The paths without those inside another one given (asked once)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not any(k in (path, "") or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept
