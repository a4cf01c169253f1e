"""Account settings for the networked commands, and connecting with them
(:func:`connect`, :func:`run`).

Where each setting comes from, first match wins:

1. a command-line option (``--jid``, ``--host``, ``--port``, ``--tls``,
   ``--ca-file``);
2. an environment variable (``XFER_JID``, ``XFER_PASSWORD``, ``XFER_HOST``,
   ``XFER_PORT``, ``XFER_TLS``, ``XFER_CA_FILE``);
3. the config file, ``$XDG_CONFIG_HOME/xfer/config.toml`` (by default
   ``~/.config/xfer/config.toml``; ``XFER_CONFIG`` names another), with keys
   ``jid``, ``password``, ``host``, ``port``, ``tls``, ``ca_file``;
4. for the password only: a prompt, when standard input is a terminal.

The port defaults to 5223 with ``tls = "direct"``, else 5222. A CA file (PEM)
replaces the system's CAs for the server's certificate (as ``curl --cacert``
does): a server with a private CA, or one pinned to its CA. ``--ca-file``
reaches :func:`connect` through the click context (it is not a parameter of
each command).

The password is never a command-line argument (other users could read it in
the process list). The OTR key and the trusted fingerprints live in
``$XDG_DATA_HOME/xfer`` (``~/.local/share/xfer``; ``XFER_DATA_DIR`` names
another), created with mode 0700, files 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import ssl
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from xfer_cli.main import EXIT_USAGE, CommandError
from xfer_cli.params import AddressType

import xfer
from xfer.store import IdentityStore

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

TLS_MODES = ("starttls", "direct", "none")
#: The default port of each TLS mode.
DEFAULT_PORTS = {"starttls": 5222, "direct": 5223, "none": 5222}
#: Where ``--ca-file`` waits in the click context for :func:`connect`.
CA_FILE_META = "xfer.ca_file"


def config_path() -> Path:
    explicit = os.environ.get("XFER_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "xfer" / "config.toml"


def data_dir() -> Path:
    explicit = os.environ.get("XFER_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "xfer"


def identity() -> IdentityStore:
    return IdentityStore(data_dir())


def _read_config(path: Path) -> dict[str, object]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path} is not valid TOML: {exc}"
        raise CommandError(msg, exit_code=EXIT_USAGE) from exc
    if "password" in data and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(
            f"xfer: warning: {path} holds a password and is readable by others; "
            f"run 'chmod 600 {path}'",
            err=True,
        )
    return data


@dataclass(frozen=True, kw_only=True)
class Settings:
    jid: str
    password: str
    host: str | None
    port: int
    tls: str
    ca_file: Path | None = None


def resolve(
    *,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    ca_file: str | os.PathLike[str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> Settings:
    """The account settings from options, environment and config file.

    Raises:
        CommandError: no JID, no password, or a bad value.
    """
    env = os.environ
    conf = _read_config(config_path())

    def pick(option: object, var: str, key: str) -> object:
        if option is not None:
            return option
        if env.get(var):
            return env[var]
        return conf.get(key)

    the_jid = pick(jid, "XFER_JID", "jid")
    if not isinstance(the_jid, str) or "@" not in the_jid:
        msg = (
            'no account: give --jid, set XFER_JID, or put jid = "you@server" '
            f"in {config_path()}"
        )
        raise CommandError(msg, exit_code=EXIT_USAGE)
    password = env.get("XFER_PASSWORD") or conf.get("password")
    if not isinstance(password, str) or not password:
        if prompt is None and sys.stdin.isatty():
            prompt = _ask_password
        if prompt is None:
            msg = (
                f"no password for {the_jid}: set XFER_PASSWORD or put it in "
                f"{config_path()} (mode 0600)"
            )
            raise CommandError(msg, exit_code=EXIT_USAGE)
        password = prompt(the_jid)
    the_host = pick(host, "XFER_HOST", "host")
    the_tls = pick(tls, "XFER_TLS", "tls") or "starttls"
    if the_tls not in TLS_MODES:
        msg = f"tls must be one of {', '.join(TLS_MODES)}, not {the_tls!r}"
        raise CommandError(msg, exit_code=EXIT_USAGE)
    raw_port = pick(port, "XFER_PORT", "port") or DEFAULT_PORTS[str(the_tls)]
    try:
        the_port = int(str(raw_port))
    except ValueError:
        the_port = 0
    if not 0 < the_port < 65536:
        raise CommandError(f"invalid port {raw_port!r}", exit_code=EXIT_USAGE)
    if the_host is not None and not isinstance(the_host, str):
        raise CommandError("host must be a string", exit_code=EXIT_USAGE)
    the_ca = pick(ca_file, "XFER_CA_FILE", "ca_file")
    if the_ca is not None and not isinstance(the_ca, str | os.PathLike):
        raise CommandError("ca_file must be a path", exit_code=EXIT_USAGE)
    return Settings(
        jid=the_jid,
        password=password,
        host=the_host or None,
        port=the_port,
        tls=str(the_tls),
        ca_file=_checked_ca_file(the_ca) if the_ca else None,
    )


def _checked_ca_file(raw: str | os.PathLike[str]) -> Path:
    """The CA file, once OpenSSL has read a certificate from it."""
    path = Path(raw).expanduser()
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # an OSError too: first
        msg = f"the CA file {path} holds no PEM certificate ({exc.reason or exc})"
        raise CommandError(msg, exit_code=EXIT_USAGE) from exc
    except OSError as exc:
        msg = f"cannot read the CA file {path}: {exc.strerror or exc}"
        raise CommandError(msg, exit_code=EXIT_USAGE) from exc
    return path


def warn_if_plain(settings: Settings) -> None:
    """``--tls none`` is for a local test server: say so on stderr when the
    server is not on this machine (the password crosses the network)."""
    if settings.tls != "none":
        return
    host = settings.host or settings.jid.split("@", 1)[1].split("/", 1)[0]
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        click.echo(
            f"xfer: warning: --tls none: the password and all traffic go to "
            f"{host} unencrypted; use it only for a local test server",
            err=True,
        )


def _ask_password(jid: str) -> str:
    return str(click.prompt(f"password for {jid}", hide_input=True, err=True))


F = TypeVar("F", bound="Callable[..., object]")


def _remember_ca_file(
    ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    ctx.meta[CA_FILE_META] = value
    return value


def account_options(func: F) -> F:
    """--jid, --host, --port, --tls, --ca-file for a networked command."""
    options = [
        click.option(
            "--jid",
            metavar="JID",
            help="Your account, user@server[/resource] (env XFER_JID).",
        ),
        click.option(
            "--host",
            metavar="HOST",
            help="Server address, if not found from the JID's domain (env XFER_HOST).",
        ),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            help=(
                "Server port [default: 5222; 5223 with --tls direct] (env XFER_PORT)."
            ),
        ),
        click.option(
            "--tls",
            type=click.Choice(TLS_MODES),
            help=(
                "starttls (default), direct TLS, or none - only for a local "
                "test server: the password then travels unencrypted (env XFER_TLS)."
            ),
        ),
        click.option(
            "--ca-file",
            metavar="PEM",
            expose_value=False,
            callback=_remember_ca_file,
            help=(
                "Trust the server's certificate only if one of the CAs in this "
                "PEM file signed it, instead of the system's CAs: a private CA "
                "(env XFER_CA_FILE, config ca_file)."
            ),
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def candidate_options(func: F) -> F:
    """--address and --no-local-addresses: the direct SOCKS5 candidates we
    offer (``xfer_transfer``'s ``addresses`` and ``local_addresses``)."""
    options = [
        click.option(
            "--address",
            "addresses",
            type=AddressType(),
            multiple=True,
            help="Also offer this address for direct connections, e.g. a "
            "port-forwarded public address (repeatable; no port: the one "
            "xfer listens on).",
        ),
        click.option(
            "--no-local-addresses",
            is_flag=True,
            help="Do not offer this machine's own addresses (only --address "
            "ones and the servers' proxies).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def candidate_config(
    addresses: tuple[tuple[str, int | None], ...], no_local_addresses: bool
) -> dict[str, Any]:
    """The ``xfer_transfer`` settings of :func:`candidate_options`."""
    return {"addresses": list(addresses), "local_addresses": not no_local_addresses}


async def connect(
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
    *,
    accept_untrusted: bool = False,
    **config: object,
) -> xfer.Client:
    """Log in; ``config`` goes to the ``xfer_transfer`` plugin."""
    ctx = click.get_current_context(silent=True)
    ca_file = ctx.meta.get(CA_FILE_META) if ctx is not None else None
    settings = resolve(jid=jid, host=host, port=port, tls=tls, ca_file=ca_file)
    warn_if_plain(settings)
    options: dict[str, Any] = dict(config)
    return await xfer.connect(
        settings.jid,
        settings.password,
        identity=identity(),
        host=settings.host,
        port=settings.port,
        tls=settings.tls,
        ca_file=settings.ca_file,
        accept_untrusted=accept_untrusted,
        **options,
    )


def run(job: Coroutine[object, object, int | None]) -> None:
    """Run a command's coroutine; exit with its code unless that is 0.

    SIGTERM stops it as Ctrl-C does (the coroutine is cancelled, then
    KeyboardInterrupt): a transfer under way tells its peer it was
    cancelled before the process exits."""
    with asyncio.Runner() as runner:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals
            runner.get_loop().add_signal_handler(signal.SIGTERM, _on_sigterm)
        code = runner.run(job)
    if code:
        sys.exit(code)


def _on_sigterm() -> None:
    """SIGTERM as Ctrl-C, through asyncio's own SIGINT handler; where
    SIGINT is ignored (a background job), SIGTERM ends the process as it
    would without us."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
