"""The listening plumbing the loopback proxies for tests share.

:class:`LoopbackListener` listens on 127.0.0.1 (a port chosen by the OS),
gives each accepted client a connection object and a relay task of its own,
and on :meth:`~LoopbackListener.stop` aborts every connection and waits for
the relays. A subclass says how a connection is made, served and aborted.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Generic, Self, TypeVar

__all__ = ["LoopbackListener"]

_LISTEN_HOST = "127.0.0.1"

ConnT = TypeVar("ConnT")


class LoopbackListener(Generic[ConnT]):
    """Listens on 127.0.0.1 and relays each accepted connection in a task.

    Use it as an async context manager, or call :meth:`start` and
    :meth:`stop`. Subclasses implement :meth:`_connection`, :meth:`_serve`
    and :meth:`_abort`, and may refine :meth:`_admit`, :meth:`_on_stop` and
    :meth:`_after_relays`.
    """

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._closing = False
        self._serials = itertools.count()
        self._live: dict[int, ConnT] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- for subclasses -------------------------------------------------------

    def _connection(self, serial: int, writer: asyncio.StreamWriter) -> ConnT:
        """A new connection object for an accepted client."""
        raise NotImplementedError

    async def _serve(self, conn: ConnT, client: asyncio.StreamReader) -> None:
        """Relay ``conn`` until it ends; it must leave :attr:`_live` then."""
        raise NotImplementedError

    def _abort(self, conn: ConnT) -> None:
        """Abort both sides of ``conn`` now (on :meth:`stop`)."""
        raise NotImplementedError

    def _admit(self) -> bool:
        """Whether to serve a client just accepted (else it is aborted)."""
        return True

    def _on_stop(self) -> None:
        """Called first thing in :meth:`stop`."""

    def _after_relays(self) -> None:
        """Called in :meth:`stop` once the relays are over."""

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a port chosen by the OS."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._closing = False
        server = await asyncio.start_server(self._accept, _LISTEN_HOST, 0)
        self._server = server
        host, port = server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for the relays.

        Calling it again (or before :meth:`start`) does nothing.
        """
        self._closing = True
        self._on_stop()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._live.values()):
            self._abort(conn)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._after_relays()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- state ----------------------------------------------------------------

    @property
    def host(self) -> str:
        """The listening address (after :meth:`start`)."""
        return self._listening()[0]

    @property
    def port(self) -> int:
        """The listening port (after :meth:`start`)."""
        return self._listening()[1]

    @property
    def live(self) -> int:
        """Client connections open now."""
        return len(self._live)

    def _listening(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._address

    # -- accepting --------------------------------------------------------------

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A plain callback, not a coroutine: the relay runs in a task of our
        # own, which stop() can cancel and await.
        if self._closing or not self._admit():
            writer.transport.abort()
            return
        serial = next(self._serials)
        conn = self._live[serial] = self._connection(serial, writer)
        task = asyncio.get_running_loop().create_task(self._serve(conn, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
