"""The ``xfer`` click group: lazy subcommands and the one error-to-exit map.

Every error a command can hit ends here, in :meth:`XferGroup.invoke`, and is
printed as one line on stderr (``xfer: error: ...``) with an exit code from
:data:`EXIT_CODES`. Messages can carry a peer's words (a reason, a JID), so the
line is escaped (:func:`xfer.display.shown`) before it reaches the terminal.
Subcommands are imported only when they run, so ``xfer --help`` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import sys
from typing import Any, NoReturn

import click

from xfer import __version__
from xfer.display import LINE_LIMIT, shown
from xfer.errors import (
    AuthenticationFailed,
    CertificateUntrusted,
    DestinationExists,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    NotSecure,
    PeerIncapable,
    ServerUnreachable,
    SharingRefused,
    TLSNotOffered,
    TLSRequired,
    TransferDeclined,
    TransferRejected,
    TransportError,
    UntrustedPeer,
    VerificationTimeout,
    XferError,
)
from xfer.jid import bare_jid

#: Exit codes, documented in ``xfer --help`` and the README.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_FORMAT = 4
EXIT_EXISTS = 5
EXIT_REFUSED = 6
EXIT_VERIFY = 7
EXIT_CONNECT = 8
EXIT_PEER = 9
EXIT_INCAPABLE = 10
EXIT_ABORTED = 11
EXIT_TIMEOUT = 12
EXIT_CERTIFICATE = 13
EXIT_NO_TLS = 14
EXIT_TLS_REQUIRED = 15
EXIT_PARTIAL = 16
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    an error (message on stderr)
  {EXIT_USAGE}    wrong usage (bad option or argument, missing account settings)
  {EXIT_INTEGRITY}    integrity check failed: tampered, truncated, or wrong key
  {EXIT_FORMAT}    input is not an xfer envelope, or of an unknown version
  {EXIT_EXISTS}    the output file exists (use --force / --overwrite)
  {EXIT_REFUSED}    the peer declined or stopped the transfer, or refused to share
  {EXIT_VERIFY}    the peer is not trusted, or its verification failed
  {EXIT_CONNECT}    cannot log in to the server (unreachable, wrong password)
  {EXIT_PEER}    the peer is offline or unreachable, or the transfer broke off
  {EXIT_INCAPABLE}   the peer is online, but its client cannot receive with xfer
  {EXIT_ABORTED}   the verification was aborted before the end; trust is unchanged
  {EXIT_TIMEOUT}   no answer from the peer within --timeout; trust is unchanged
  {EXIT_CERTIFICATE}   the server's certificate is not trusted (see --ca-file)
  {EXIT_NO_TLS}   the server offers no TLS (nothing was sent)
  {EXIT_TLS_REQUIRED}   the server requires TLS, and --tls none was asked
  {EXIT_PARTIAL}   several recipients: some got every file, others not (see the summary)
  {EXIT_INTERRUPTED}  interrupted
"""

#: name -> (module, attribute, one-line help) of each lazily loaded command.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "keygen": (
        "xfer_cli.commands.offline",
        "keygen",
        "Create a random 32-byte key file (offline use).",
    ),
    "encrypt": (
        "xfer_cli.commands.offline",
        "encrypt",
        "Seal a file with a key file (offline use).",
    ),
    "decrypt": (
        "xfer_cli.commands.offline",
        "decrypt",
        "Verify and open a sealed file (offline use).",
    ),
    "send": ("xfer_cli.commands.send", "send", "Send files and directories to a JID."),
    "receive": (
        "xfer_cli.commands.receive",
        "receive",
        "Wait for files and save them.",
    ),
    "keys": (
        "xfer_cli.commands.keys",
        "keys",
        "Show your OTR fingerprint and whom you trust.",
    ),
    "trust": ("xfer_cli.commands.keys", "trust", "Trust a JID's OTR fingerprint."),
    "untrust": ("xfer_cli.commands.keys", "untrust", "Stop trusting a fingerprint."),
    "verify": (
        "xfer_cli.commands.verify",
        "verify",
        "Check a JID's fingerprint with a shared secret (SMP).",
    ),
    "share": (
        "xfer_cli.commands.share",
        "share",
        "Share a folder with JIDs (encrypted), until Ctrl-C.",
    ),
    "ls": ("xfer_cli.commands.share", "ls", "List what a JID shares with you."),
    "get": (
        "xfer_cli.commands.share",
        "get",
        "Fetch files or folders a JID shares with you.",
    ),
    "demo": (
        "xfer_cli.commands.demo",
        "demo",
        "Run a local server and an encrypted transfer between two accounts.",
    ),
}


class CommandError(XferError):
    """A command's own failure, already worded for the user."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe(exc: BaseException) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit code."""
    if isinstance(exc, CommandError):
        return str(exc), exc.exit_code
    if isinstance(exc, IntegrityError):
        return (
            f"{exc} - nothing was written. Check the key, or get a fresh copy.",
            EXIT_INTEGRITY,
        )
    if isinstance(exc, EnvelopeFormatError):
        return f"{exc} - is this a file made by xfer?", EXIT_FORMAT
    if isinstance(exc, DestinationExists):
        return f"{exc}; use --force / --overwrite to replace it", EXIT_EXISTS
    found = _network_error(exc)
    if found is not None:
        return found
    if isinstance(exc, LocalProtocolError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, XferError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; nothing was left half-written", EXIT_INTERRUPTED
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"the disk is full{where}; free some space", EXIT_ERROR
        return f"{exc.strerror or exc}{where}", EXIT_ERROR
    raise exc


def _network_error(exc: BaseException) -> tuple[str, int] | None:
    """Errors of the networked commands: the peer, the server, the transfer."""
    found = _tls_error(exc)
    if found is not None:
        return found
    if isinstance(exc, AuthenticationFailed):
        return (
            f"{exc} - check the JID and XFER_PASSWORD (or the config file)",
            EXIT_CONNECT,
        )
    if isinstance(exc, UntrustedPeer):
        return (
            f"{exc}: compare it with them, then 'xfer trust {bare_jid(exc.peer)} "
            "FINGERPRINT', or check it with 'xfer verify'",
            EXIT_VERIFY,
        )
    if isinstance(exc, TransferDeclined | SharingRefused):
        return str(exc), EXIT_REFUSED
    if isinstance(exc, TransferRejected):
        hint = ""
        if exc.reason == "security-error":
            hint = " - does the receiver trust your fingerprint ('xfer keys')?"
        return f"{exc}{hint}", EXIT_REFUSED
    if isinstance(exc, PeerIncapable):
        return (
            f"{exc} - it needs xfer running ('xfer receive') on one of its devices",
            EXIT_INCAPABLE,
        )
    if isinstance(exc, NotSecure):
        return f"{exc}", EXIT_PEER
    if isinstance(exc, ServerUnreachable):
        return (
            f"{exc} - check --host/--port (XFER_HOST/XFER_PORT) and the network",
            EXIT_CONNECT,
        )
    if isinstance(exc, VerificationTimeout):
        return (
            f"{exc}: the verification was given up, and trust is unchanged",
            EXIT_TIMEOUT,
        )
    if isinstance(exc, TransportError):
        return f"the transfer broke off: {exc}", EXIT_PEER
    return None


def _tls_error(exc: BaseException) -> tuple[str, int] | None:
    """Errors of TLS to the server, each with its own code."""
    if isinstance(exc, CertificateUntrusted):
        return (
            f"{exc} - if you trust the CA that signed it, give it with --ca-file "
            "(XFER_CA_FILE); if not, do not log in there",
            EXIT_CERTIFICATE,
        )
    if isinstance(exc, TLSNotOffered):
        return (
            f"{exc} - check --tls and --port (STARTTLS is usually on 5222, "
            "direct TLS on 5223); --tls none only for a local test server",
            EXIT_NO_TLS,
        )
    if isinstance(exc, TLSRequired):
        return (
            f"{exc} - drop --tls none (XFER_TLS) to use STARTTLS",
            EXIT_TLS_REQUIRED,
        )
    return None


def say_error(message: str) -> None:
    """Print ``xfer: error: MESSAGE`` on stderr, escaped and capped: error
    messages embed what peers and servers said."""
    click.echo(f"xfer: error: {shown(message, limit=LINE_LIMIT)}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    say_error(message)
    sys.exit(code)


def report_only(exc: BaseException) -> None:
    """Print the line :func:`report` prints for ``exc``, without exiting
    (a receiver goes on after one failed file)."""
    message, _ = describe(exc)
    say_error(message)


def report(exc: BaseException) -> NoReturn:
    """Print one line for ``exc`` and exit with its code (the one place)."""
    message, code = describe(exc)
    _fail(message, code)


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
    """End-to-end encrypted file transfer over XMPP.

    \b
    Try it:        xfer demo
    Your key:      xfer keys            (show your fingerprint)
    Trust a peer:  xfer trust JID FINGERPRINT,  or  xfer verify JID
    Send:          xfer send FILE... --to JID
    Receive:       xfer receive --dir DIR

    Your account comes from XFER_JID / XFER_PASSWORD or
    ~/.config/xfer/config.toml (see 'xfer send --help'). Files are sealed
    chunk by chunk with keys from OTR, verified before anything is written,
    and appear only once complete. Offline, 'encrypt' and 'decrypt' do the
    same with a key file from 'keygen'.
    """
