"""Offline commands: ``keygen``, ``encrypt``, ``decrypt``.

They use the envelope with a key file instead of an OTR session, so the
format can be used and tried by hand. The key file holds exactly 32 raw
random bytes; keep it secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import click
from xfer_cli.main import EXIT_USAGE, CommandError
from xfer_cli.progress import Progress

from xfer.aio.files import open_file, seal_file
from xfer.envelope import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_SUITE,
    KEY_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Suite,
)
from xfer.errors import DestinationExists

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from xfer.aio.files import Target

_DEFAULT_THREADS = min(2, os.cpu_count() or 1)

key_file_option = click.option(
    "--key-file",
    "-k",
    required=True,
    envvar="XFER_KEY_FILE",
    type=click.Path(dir_okay=False, readable=True),
    help="The 32-byte key file made by 'xfer keygen' (env: XFER_KEY_FILE).",
)
force_option = click.option(
    "--force", "-f", is_flag=True, help="Replace OUT if it exists."
)
threads_option = click.option(
    "--threads",
    "-j",
    type=click.IntRange(1, 64),
    default=_DEFAULT_THREADS,
    show_default=True,
    help="Threads for the cryptography (chunks are processed in parallel).",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress display.")


def read_key_file(path: str) -> bytes:
    """Read and check a key file.

    Raises:
        CommandError: it is not exactly 32 bytes, or cannot be read.
    """
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_SIZE + 1)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as exc:
        msg = f"cannot read key file {path}: {exc.strerror}"
        raise CommandError(msg) from exc
    if len(key) != KEY_SIZE:
        msg = (
            f"key file {path} must hold exactly {KEY_SIZE} bytes "
            f"(make one with 'xfer keygen')"
        )
        raise CommandError(msg, exit_code=EXIT_USAGE)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(
            f"xfer: warning: key file {path} is readable by others; "
            f"run 'chmod 600 {path}'",
            err=True,
        )
    return key


def _target(path: str, *, reading: bool) -> Target:
    if path == "-":
        return sys.stdin.fileno() if reading else sys.stdout.fileno()
    return path


def _check_paths(src: str, out: str) -> None:
    if src != "-" and out != "-":
        with contextlib.suppress(OSError):
            if os.path.samefile(src, out):
                msg = "IN and OUT are the same file"
                raise CommandError(msg, exit_code=EXIT_USAGE)


@contextlib.contextmanager
def _executor(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    if threads <= 1:
        yield None
        return
    # The calling thread processes one run of chunks itself; the pool the rest.
    with ThreadPoolExecutor(threads - 1, thread_name_prefix="xfer-crypto") as pool:
        yield pool


def _run_with_progress(
    label: str,
    quiet: bool,
    threads: int,
    job: Callable[[ThreadPoolExecutor | None, Progress], Coroutine[Any, Any, object]],
) -> None:
    """Run one file job with a thread pool and a progress line on stderr."""
    progress = Progress(label, enabled=False if quiet else None)
    try:
        with _executor(threads) as pool:
            asyncio.run(job(pool, progress))
    finally:
        progress.close()


@click.command()
@click.argument("keyfile", type=click.Path(dir_okay=False))
def keygen(keyfile: str) -> None:
    """Write 32 random bytes to KEYFILE (mode 0600).

    Refuses to overwrite an existing file. Share the key file with the other
    side over a channel you trust; anyone with it can decrypt.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(keyfile, flags, 0o600)
    except FileExistsError:
        raise DestinationExists(keyfile) from None
    try:
        os.write(fd, os.urandom(KEY_SIZE))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(keyfile)
        raise
    os.close(fd)
    click.echo(f"wrote a new {KEY_SIZE}-byte key to {keyfile}", err=True)


@click.command()
@key_file_option
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--suite",
    type=click.Choice([s.label for s in Suite]),
    default=DEFAULT_SUITE.label,
    show_default=True,
    help="Cipher suite.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Plaintext bytes per authenticated chunk.",
)
@force_option
@threads_option
@quiet_option
def encrypt(
    key_file: str,
    src: str,
    out: str,
    suite: str,
    chunk_size: int,
    force: bool,
    threads: int,
    quiet: bool,
) -> None:
    """Seal IN into OUT with the key in --key-file.

    Use - for standard input or output. OUT appears only once complete; it is
    never replaced unless you give --force.
    """
    key = read_key_file(key_file)
    _check_paths(src, out)
    if out == "-" and sys.stdout.isatty():
        msg = "refusing to write encrypted data to a terminal; give a file or redirect"
        raise CommandError(msg, exit_code=EXIT_USAGE)
    _run_with_progress(
        "encrypting",
        quiet,
        threads,
        lambda pool, progress: seal_file(
            key,
            _target(src, reading=True),
            _target(out, reading=False),
            suite=Suite.from_label(suite),
            chunk_size=chunk_size,
            executor=pool,
            workers=threads,
            overwrite=force,
            progress=progress,
        ),
    )


@click.command()
@key_file_option
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@force_option
@threads_option
@quiet_option
def decrypt(
    key_file: str, src: str, out: str, force: bool, threads: int, quiet: bool
) -> None:
    """Verify IN and write its plaintext to OUT.

    Every chunk is authenticated before its plaintext is written, to a
    temporary file beside OUT that is renamed into place only when the whole
    stream verified. On any failure nothing is left at OUT and the exit code
    is 3 (integrity) or 4 (not an xfer file). With OUT = -, verified chunks
    stream to standard output as they come; check the exit code.
    """
    key = read_key_file(key_file)
    _check_paths(src, out)
    _run_with_progress(
        "decrypting",
        quiet,
        threads,
        lambda pool, progress: open_file(
            key,
            _target(src, reading=True),
            _target(out, reading=False),
            executor=pool,
            workers=threads,
            overwrite=force,
            progress=progress,
        ),
    )
