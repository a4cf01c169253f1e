"""The networked commands: ``send``, ``receive``, ``keys``, ``trust``,
``untrust``, ``verify``.

Each connects the account from :mod:`xfer_cli.account`, does its job through
the library (:mod:`xfer.api`) and disconnects. Errors are left to the one
place that words them (:func:`xfer_cli.main.report`).

Every string a peer or a server chose (JIDs and resources, file names, media
types, verification questions, reasons) is hostile: it goes through
:func:`xfer.display.shown` (through :func:`xfer_cli.output.quoted` for names)
before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from xfer_cli.account import account_options, connect, data_dir, identity, run
from xfer_cli.main import EXIT_USAGE, EXIT_VERIFY, CommandError, report_only
from xfer_cli.output import Output, json_option, quiet_option, quoted
from xfer_cli.params import DurationType, SizeType
from xfer_cli.progress import format_bytes

from xfer.display import shown
from xfer.errors import XferError
from xfer.names import numbered, safe_parts
from xfer.otr.trust import bare_jid, format_fingerprint, parse_fingerprint

if TYPE_CHECKING:
    from collections.abc import Iterator

    import xfer
    from xfer.xmpp.transfer import IncomingOffer

# -- keys and trust ---------------------------------------------------------------


@click.command()
@json_option
def keys(as_json: bool) -> None:
    """Show your OTR fingerprint (creating your key on first use) and the
    fingerprints you trust.

    Tell your fingerprint to the people you exchange files with over a
    channel you trust (in person, a call), and compare theirs the same way;
    then 'xfer trust' them. Or let 'xfer verify' check both with a shared
    secret.
    """
    store = identity()
    key = store.private_key()
    ours = format_fingerprint(key.public.fingerprint)
    trusted = store.trust_store().entries()
    out = Output(as_json=as_json)
    out.event(
        "keys",
        fingerprint=ours,
        directory=str(store.directory),
        trusted=[
            {
                "jid": jid,
                "fingerprint": format_fingerprint(e.fingerprint),
                "how": e.how.value,
            }
            for jid, e in trusted
        ],
    )
    if as_json:
        return
    click.echo(f"your fingerprint: {ours}")
    click.echo(f"key and trust store: {store.directory}")
    if not trusted:
        click.echo(
            "you trust nobody yet ('xfer trust JID FINGERPRINT' or 'xfer verify JID')"
        )
    for jid, entry in trusted:
        fp = format_fingerprint(entry.fingerprint)
        click.echo(f"trusted: {shown(jid)}  {fp}  ({entry.how.value})")


@click.command()
@click.argument("jid")
@click.argument("fingerprint", nargs=-1, required=True)
def trust(jid: str, fingerprint: tuple[str, ...]) -> None:
    """Trust FINGERPRINT as JID's OTR key.

    Only after comparing it with JID's owner over a channel you trust. The
    fingerprint may be written with or without spaces (40 hex digits).
    """
    if "@" not in jid:
        raise CommandError(f"{jid!r} is not a JID (user@server)", exit_code=EXIT_USAGE)
    try:
        raw = parse_fingerprint("".join(fingerprint))
    except XferError as exc:
        raise CommandError(
            f"{exc}; it looks like 'xfer keys' shows it: 40 hex digits",
            exit_code=EXIT_USAGE,
        ) from None
    from xfer.otr.trust import Verification

    store = identity()
    trust_store = store.trust_store()
    trust_store.trust(jid, raw, Verification.MANUAL, now=int(time.time()))
    store.save_trust_store(trust_store)
    click.echo(f"trusted {bare_jid(jid)}: {format_fingerprint(raw)}", err=True)


@click.command()
@click.argument("jid")
@click.argument("fingerprint", nargs=-1)
def untrust(jid: str, fingerprint: tuple[str, ...]) -> None:
    """Stop trusting JID's fingerprint (or all of them, if none is given)."""
    store = identity()
    trust_store = store.trust_store()
    raw = parse_fingerprint("".join(fingerprint)) if fingerprint else None
    gone = trust_store.untrust(jid, raw)
    store.save_trust_store(trust_store)
    if not gone:
        raise CommandError(f"no trusted fingerprint for {bare_jid(jid)}")
    click.echo(f"no longer trusted: {gone} fingerprint(s) of {bare_jid(jid)}", err=True)


def _read_secret(prompt: str) -> str:
    """The SMP secret: asked without echo on a terminal, else one stdin line."""
    if sys.stdin.isatty():
        secret = str(click.prompt(prompt, hide_input=True, err=True))
    else:
        secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        raise CommandError("an empty secret proves nothing", exit_code=EXIT_USAGE)
    return secret


@click.command()
@click.argument("peer", metavar="JID")
@click.option("--question", "-Q", help="A question whose answer is the secret.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120,
    show_default=True,
    help="Seconds to wait for the other side.",
)
@account_options
def verify(
    peer: str,
    question: str | None,
    timeout: float,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
) -> None:
    """Check JID's fingerprint with a secret you both know (SMP).

    Both of you run 'xfer verify' at the same time, each naming the other,
    and type the same secret (agreed in person, or the answer to --question).
    The secret never crosses the network; if it matches on both sides, each
    fingerprint is trusted. A wrong secret, or someone in the middle, fails
    (exit code 7). The secret is asked for, never given as an argument.
    """

    async def job() -> int:
        client = await connect(jid, host, port, tls, accept_untrusted=True)
        try:
            full, fingerprint, trusted = await client.secure(peer)
            click.echo(
                f"{shown(full)} has fingerprint {fingerprint}"
                + (" (already trusted)" if trusted else ""),
                err=True,
            )
            # Who asks: the side with the smaller full JID (both must agree).
            if client.jid < full:
                secret = _read_secret(
                    f"secret{' (answer to: ' + question + ')' if question else ''}"
                )
                click.echo(f"waiting for {shown(full)} to answer...", err=True)
                ok = await client.verify(full, secret, question=question)
            else:
                click.echo(f"waiting for {shown(full)} to ask...", err=True)
                # Only this peer's question: another's (anyone can start one)
                # stays queued, and is never shown as if it came from them.
                who, asked = await _next_question(client, full, timeout)
                click.echo(
                    f"{shown(who)} asks: {quoted(asked)}"
                    if asked
                    else f"{shown(who)} asks to verify (no question)",
                    err=True,
                )
                secret = _read_secret("secret")
                ok = await client.answer_verification(who, secret)
        finally:
            await client.close()
        if not ok:
            raise CommandError(
                f"verification of {shown(full)} FAILED: the secrets differ, or someone "
                "is in the middle; its fingerprint is not trusted",
                exit_code=EXIT_VERIFY,
            )
        click.echo(
            f"verified: {shown(full)} is trusted with fingerprint {fingerprint}",
            err=True,
        )
        return 0

    run(job())


async def _next_question(
    client: xfer.Client, peer: str, timeout: float
) -> tuple[str, str | None]:
    """The next verification ``peer`` (a full JID) started: (its full JID,
    its question). Questions from anyone else stay queued."""
    return await client.next_verification(timeout, peer=peer)


# -- send -----------------------------------------------------------------------


def _files(paths: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """(path, name to send) for every file; a directory keeps its structure
    ("photos/2024/a.jpg"). Symbolic links inside directories are skipped."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            base = path.resolve().name or "files"
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    child = Path(root) / name
                    if child.is_symlink() or not child.is_file():
                        continue
                    rel = child.relative_to(path).as_posix()
                    yield child, f"{base}/{rel}"
        else:
            yield path, path.name


@click.command()
@click.argument(
    "paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=True)
)
@click.option("--to", "peer", required=True, metavar="JID", help="Who gets the files.")
@account_options
@quiet_option
@json_option
def send(
    paths: tuple[str, ...],
    peer: str,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Send files (and directories, with their structure) to JID.

    The receiver runs 'xfer receive'. Everything is end-to-end encrypted and
    authenticated with OTR: the servers see neither the contents nor the
    names. JID's fingerprint must be trusted first ('xfer trust' or 'xfer
    verify'). Each file counts only once the receiver has verified it.

    Your account: --jid or XFER_JID; the password from XFER_PASSWORD, the
    config file (~/.config/xfer/config.toml: jid, password, host, port, tls)
    or a prompt.
    """
    out = Output(quiet=quiet, as_json=as_json)
    files = list(_files(paths))
    if not files:
        raise CommandError("nothing to send: the directories are empty")

    async def job() -> int:
        client = await connect(jid, host, port, tls)
        try:
            full, fingerprint, _ = await client.secure(peer)
            out.say(f"sending to {shown(full)} (fingerprint {fingerprint})")
            total = 0
            started = time.perf_counter()
            for path, name in files:
                progress = out.progress(name)
                try:
                    result = await client.send_file(
                        full, path, name=name, progress=progress
                    )
                finally:
                    progress.close()
                total += result.size
                rate = result.size / max(result.seconds, 1e-9) / 1e6
                resumed = ""
                if result.breaks or result.resumed_from:
                    resumed = (
                        f", resumed after {result.breaks} break(s)"
                        if result.breaks
                        else ""
                    ) + (
                        f", {format_bytes(result.resumed_from)} were already there"
                        if result.resumed_from
                        else ""
                    )
                out.say(
                    f"sent {quoted(name)} ({format_bytes(result.size)}, "
                    f"{shown(result.transport)}, "
                    f"{rate:.1f} MB/s{resumed}): verified by the receiver"
                )
                out.event(
                    "sent",
                    name=name,
                    size=result.size,
                    peer=result.peer,
                    transport=result.transport,
                    seconds=round(result.seconds, 3),
                    breaks=result.breaks,
                    resumed_from=result.resumed_from,
                )
            if len(files) > 1:
                seconds = time.perf_counter() - started
                out.say(f"{len(files)} files, {format_bytes(total)} in {seconds:.1f} s")
        finally:
            await client.close()
        return 0

    run(job())


# -- receive ----------------------------------------------------------------------


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
    target = parent / parts[-1]
    n = 1
    while not overwrite and (target.exists() or target.is_symlink()):
        n += 1
        target = parent / numbered(parts[-1], n)
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
    out.say(
        f"{shown(offer.peer)} offers {quoted(offer.name)}: {format_bytes(offer.size)}, "
        f"{shown(offer.media_type)}, SHA-256 {offer.sha256.hex()[:16]}..."
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
        sha256=offer.sha256.hex(),
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
    out.say(
        f"saved {shown(str(dest), limit=None)} ({format_bytes(offer.size)}, "
        f"{offer.size / max(seconds, 1e-9) / 1e6:.1f} MB/s, SHA-256 verified)"
    )
    out.event(
        "received",
        peer=offer.peer,
        name=offer.name,
        path=str(dest),
        size=offer.size,
        sha256=offer.sha256.hex(),
        seconds=round(seconds, 3),
    )


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
@quiet_option
@json_option
def receive(
    sender: str | None,
    directory: str,
    yes: bool,
    overwrite: bool,
    once: bool,
    max_size: int | None,
    keep_partial: float,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Wait for files and save them in --dir.

    Each offer shows what the sender's OTR message says (name, size,
    SHA-256) and whether the sender's fingerprint is trusted, and asks
    before accepting, unless --yes (which never accepts an untrusted peer).
    Names are made safe (no path escapes, hidden files or device names;
    taken names get a number). A file appears only once it is verified.

    A transfer that breaks off (network, either side killed) goes on by
    itself when the sender comes back within a couple of minutes; later,
    sending the same file again continues where it stopped (--keep-partial).
    Ctrl-C stops.

    Your account: --jid or XFER_JID; the password from XFER_PASSWORD, the
    config file (~/.config/xfer/config.toml: jid, password, host, port, tls)
    or a prompt.
    """
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
        )
        try:
            out.say(
                f"waiting for files as {shown(client.jid)} "
                f"(fingerprint {client.fingerprint}); Ctrl-C to stop"
            )
            out.event("ready", jid=client.jid, fingerprint=client.fingerprint)
            while True:
                offer = await client.next_offer()
                busy[0] = True
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


__all__ = ["data_dir", "keys", "receive", "send", "trust", "untrust", "verify"]
