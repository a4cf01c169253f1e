"""``xfer send``: files and directories to a JID, each verified by the receiver."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from xfer_cli.account import (
    account_options,
    candidate_config,
    candidate_options,
    connect,
    run,
)
from xfer_cli.main import EXIT_INTERRUPTED, CommandError
from xfer_cli.output import Output, json_option, quiet_option, quoted
from xfer_cli.progress import format_bytes

from xfer.aio.stdio import input_pieces, stdin_is_live
from xfer.display import shown
from xfer.envelope import Suite

if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["send"]


def path_taken(transport: str, via: str) -> str:
    """Which path the data took, for the user: "direct to HOST:PORT",
    "through the proxy JID" or "in-band (IBB, through the servers)"."""
    if transport == "ibb":
        return "in-band (IBB, through the servers)"
    if transport == "socks5-proxy":
        return f"through the proxy {shown(via)}"
    kind = shown(transport.removeprefix("socks5-"))  # direct, assisted
    return f"{kind} to {shown(via)}" if via else kind


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
    "paths",
    metavar="PATH...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, allow_dash=True),
)
@click.option(
    "--to",
    "peers",
    required=True,
    multiple=True,
    metavar="JID",
    help="Who gets the files; repeat it for several recipients (each under "
    "its own keys; the files are read once for all). A group chat room "
    "sends to its occupants whose real JID it shows and whose fingerprint "
    "you trust; the others are listed and skipped.",
)
@click.option(
    "--name",
    metavar="NAME",
    help="With '-': the name the receiver is told (default: stdin).",
)
@click.option(
    "--live",
    is_flag=True,
    help="With '-': send what waits as soon as the input pauses (1 ms), at "
    "the latest after --flush-ms, for interactive and live data (automatic "
    "when standard input is a terminal, FIFO or socket).",
)
@click.option(
    "--flush-ms",
    type=click.IntRange(1, 10_000),
    default=15,
    show_default=True,
    help="With --live: how long data may wait before it is sent.",
)
@click.option(
    "--suite",
    type=click.Choice(["auto", *(s.label for s in Suite)]),
    default="auto",
    show_default=True,
    help="Cipher suite; auto takes the one whose MAC is faster on this machine "
    "(the receiver opens either).",
)
@account_options
@candidate_options
@quiet_option
@json_option
def send(
    paths: tuple[str, ...],
    peers: tuple[str, ...],
    name: str | None,
    live: bool,
    flush_ms: int,
    suite: str,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    addresses: tuple[tuple[str, int | None], ...],
    no_local_addresses: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Send files (and directories, with their structure) to JID; or, with
    PATH '-', standard input as a stream until it ends.

    The receiver runs 'xfer receive' ('xfer receive --stdout' for a stream:
    'tar c dir | xfer send - --to JID' on one side, 'xfer receive --stdout
    | tar x' on the other). A stream has no size up front; the receiver
    writes each chunk only once it verified, and at the end both sides
    print the SHA-256 of what went through. If the stream breaks off, both
    exit non-zero with "stream cut after N verified bytes" (it does not
    resume: standard input cannot be read again).

    Everything is end-to-end encrypted and authenticated with OTR: the
    servers see neither the contents nor the names. JID's fingerprint must
    be trusted first ('xfer trust' or 'xfer verify'). Each file counts only
    once the receiver has verified it.

    Your account: --jid or XFER_JID; the password from XFER_PASSWORD, the
    config file (~/.config/xfer/config.toml: jid, password, host, port, tls)
    or a prompt.
    """
    out = Output(quiet=quiet, as_json=as_json)
    peer = peers[0]
    if "-" in paths:
        if len(paths) > 1:
            raise click.UsageError("'-' (standard input) is sent alone")
        if len(peers) > 1:
            raise click.UsageError("'-' (standard input) goes to one recipient")
        run(
            _send_stdin(
                out,
                peer,
                name or "stdin",
                live,
                flush_ms / 1000,
                (jid, host, port, tls, suite),
                candidate_config(addresses, no_local_addresses),
            )
        )
        return
    if name is not None or live:
        raise click.UsageError("--name and --live go with '-' (standard input)")
    files = list(_files(paths))
    if not files:
        raise CommandError("nothing to send: the directories are empty")
    if len(peers) > 1:
        from xfer_cli.commands.send_many import run_many

        connecting = dict(jid=jid, host=host, port=port, tls=tls, suite=suite)
        connecting.update(candidate_config(addresses, no_local_addresses))
        run(run_many(out, list(peers), files, connecting))
        return

    async def job() -> int:
        client = await connect(
            jid,
            host,
            port,
            tls,
            suite=suite,
            **candidate_config(addresses, no_local_addresses),
        )
        try:
            if await client.is_room(peer):  # a group chat: its occupants
                from xfer_cli.commands.send_many import send_to_targets

                return await send_to_targets(out, client, [peer], files)
            full, fingerprint, trusted = await client.secure(peer)
            if trusted:  # else the first send_file says it is not
                out.say(f"sending to {shown(full)} (fingerprint {fingerprint})")
            total = 0
            started = time.perf_counter()
            for path, as_name in files:
                progress = out.progress(as_name)
                try:
                    result = await client.send_file(
                        full, path, name=as_name, progress=progress
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
                    f"sent {quoted(as_name)} ({format_bytes(result.size)}, "
                    f"{path_taken(result.transport, result.via)}, "
                    f"{rate:.1f} MB/s{resumed}): verified by the receiver"
                )
                out.event(
                    "sent",
                    name=as_name,
                    size=result.size,
                    peer=result.peer,
                    transport=result.transport,
                    via=result.via,
                    seconds=round(result.seconds, 3),
                    setup_seconds=round(result.setup_seconds, 3),
                    after_failure=None
                    if result.after_failure is None
                    else round(result.after_failure, 3),
                    breaks=result.breaks,
                    resumed_from=result.resumed_from,
                    sha256=result.sha256.hex(),
                )
            if len(files) > 1:
                seconds = time.perf_counter() - started
                out.say(f"{len(files)} files, {format_bytes(total)} in {seconds:.1f} s")
        finally:
            await client.close()
        return 0

    run(job())


async def _send_stdin(
    out: Output,
    peer: str,
    name: str,
    live: bool,
    flush: float,
    account: tuple[str | None, str | None, int | None, str | None, str],
    candidates: dict[str, Any],
) -> int:
    """Send standard input as one stream; report what the receiver verified."""
    live = live or stdin_is_live()
    jid, host, port, tls, suite = account
    client = await connect(jid, host, port, tls, suite=suite, **candidates)
    try:
        full, fingerprint, trusted = await client.secure(peer)
        if trusted:
            out.say(
                f"sending standard input to {shown(full)} (fingerprint {fingerprint})"
            )
        progress = out.progress(name)
        read = [0]  # bytes of standard input sealed and sent so far

        def counted(done: int, total: int | None) -> None:
            read[0] = done
            progress(done, total)

        try:
            result = await client.send_stream(
                full,
                input_pieces(sys.stdin.fileno()),
                name=name,
                live=live,
                flush_interval=flush,
                progress=counted,
            )
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: the receiver heard "cancel" by now.
            raise CommandError(
                f"interrupted: the stream was cut after {read[0]} bytes of "
                "standard input were sent (the receiver keeps what verified)",
                exit_code=EXIT_INTERRUPTED,
            ) from None
        finally:
            progress.close()
        rate = result.size / max(result.seconds, 1e-9) / 1e6
        out.say(
            f"sent stream {quoted(name)} ({format_bytes(result.size)}, "
            f"{path_taken(result.transport, result.via)}, {rate:.1f} MB/s): "
            f"the receiver verified "
            f"{result.size} bytes, SHA-256 {result.sha256.hex()}"
        )
        out.event(
            "sent",
            name=name,
            stream=True,
            size=result.size,
            peer=result.peer,
            transport=result.transport,
            seconds=round(result.seconds, 3),
            sha256=result.sha256.hex(),
        )
    finally:
        await client.close()
    return 0
