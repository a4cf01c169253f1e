"""What the throw-away XMPP servers (:mod:`xfer.testing.prosody`,
:mod:`xfer.testing.ejabberd`) share: stopping (the process, then the
private directory if the server made it), the ``with`` block, and running
one by hand until Ctrl-C."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

__all__ = ["LocalServer", "free_port", "run_by_hand"]


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    """A server process with a private directory: a subclass (a dataclass)
    starts it in :meth:`start` and ends the process in :meth:`_terminate`;
    :meth:`stop` also removes the directory if :meth:`start` made it
    (``_own_dir``). The fields are what both servers are given."""

    domain: str = "xfer.test"
    accounts: dict[str, str] = field(default_factory=dict)
    #: 0: a free port, chosen at start.
    c2s_port: int = 0
    proxy_port: int = 0
    #: A private directory (None: one made at start, removed at stop).
    directory: Path | None = None
    #: The address it listens on (c2s, s2s, the proxy, which also announces
    #: it to clients), and a command prefix to run it with (for instance
    #: ``ip netns exec NAME``: inside a network namespace).
    address: str = "127.0.0.1"
    wrapper: tuple[str, ...] = ()
    #: Offer STARTTLS (a certificate from a throw-away CA unless one is
    #: given; see the subclass's ``ca_file``); refuse logins without it;
    #: also listen for direct TLS (XEP-0368) on :attr:`direct_tls_port`.
    tls: bool = False
    require_tls: bool = False
    direct_tls: bool = False
    direct_tls_port: int = 0
    _own_dir: bool = False

    def start(self) -> Self:
        raise NotImplementedError

    def _terminate(self) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        """One line for a person who started it by hand: where it listens,
        and its accounts."""
        raise NotImplementedError

    def stop(self) -> None:
        self._terminate()
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_by_hand(make: Callable[[dict[str, str]], LocalServer], argv: list[str]) -> int:
    """``python -m xfer.testing.<server> user:password...``: a server with
    those accounts (default alice and bob) until Ctrl-C."""
    accounts = dict(a.split(":", 1) for a in argv) or {"alice": "alice", "bob": "bob"}
    with make(accounts) as server:
        print(server.summary())
        print("Ctrl-C stops it.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0
