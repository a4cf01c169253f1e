"""The ``xfer`` click group: lazy subcommands and the one error-to-exit map.

Every error a command can hit ends here, in :meth:`XferGroup.invoke`, and is
printed as one line on stderr (``xfer: error: ...``) with an exit code from
:data:`EXIT_CODES`. Subcommands are imported only when they run, so ``xfer
--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn

import click

from xfer import __version__
from xfer.errors import (
    DestinationExists,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    XferError,
)

#: Exit codes, documented in ``xfer --help`` and the README.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_FORMAT = 4
EXIT_EXISTS = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    an error (message on stderr)
  {EXIT_USAGE}    wrong usage (bad option or argument)
  {EXIT_INTEGRITY}    integrity check failed: tampered, truncated, or wrong key
  {EXIT_FORMAT}    input is not an xfer envelope, or of an unknown version
  {EXIT_EXISTS}    the output file exists (use --force to replace it)
  {EXIT_INTERRUPTED}  interrupted
"""

#: name -> (module, attribute, one-line help) of each lazily loaded command.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "keygen": (
        "xfer_cli.commands.offline",
        "keygen",
        "Create a random 32-byte key file.",
    ),
    "encrypt": ("xfer_cli.commands.offline", "encrypt", "Seal a file with a key file."),
    "decrypt": (
        "xfer_cli.commands.offline",
        "decrypt",
        "Verify and open a sealed file.",
    ),
}


class CommandError(XferError):
    """A command's own failure, already worded for the user."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"xfer: error: {message}", err=True)
    sys.exit(code)


def report(exc: BaseException) -> NoReturn:
    """Print one line for ``exc`` and exit with its code (the one place)."""
    if isinstance(exc, CommandError):
        _fail(str(exc), exc.exit_code)
    if isinstance(exc, IntegrityError):
        _fail(
            f"{exc} - nothing was written. Check the key file, "
            "or get a fresh copy of the input.",
            EXIT_INTEGRITY,
        )
    if isinstance(exc, EnvelopeFormatError):
        _fail(f"{exc} - is this a file made by 'xfer encrypt'?", EXIT_FORMAT)
    if isinstance(exc, DestinationExists):
        _fail(f"{exc}; use --force to replace it", EXIT_EXISTS)
    if isinstance(exc, LocalProtocolError):
        _fail(str(exc), EXIT_USAGE)
    if isinstance(exc, XferError):
        _fail(str(exc), EXIT_ERROR)
    if isinstance(exc, KeyboardInterrupt):
        _fail("interrupted; nothing was left half-written", EXIT_INTERRUPTED)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
    raise exc


class XferGroup(click.Group):
    """A group whose commands load lazily and whose errors map to exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module, attr, _ = spec
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        # List commands from the table, without importing every module.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - click's own type
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (XferError, OSError, KeyboardInterrupt) as exc:
            report(exc)


@click.group(
    cls=XferGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="xfer")
def cli() -> None:
    """End-to-end encrypted file transfer.

    Offline, 'encrypt' and 'decrypt' seal and open files with a shared key
    file made by 'keygen': every 64 KiB chunk is authenticated before any of
    its plaintext is written, and output appears only once all of it verified.
    """
