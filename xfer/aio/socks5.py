"""SOCKS5 bytestreams on asyncio: the stream, the client and our streamhost.

The handshakes are :mod:`xfer.framing.socks5`'s machines; this module drives
them over a :class:`~xfer.aio.tcp.TcpConnection` (one fixed receive buffer,
see there why not asyncio's streams). Nothing here knows XMPP: which
streamhosts to try, and who may connect for which address, is negotiated
elsewhere (:mod:`xfer.xmpp.socks5`, XEP-0065; the transfer plugin, XEP-0260).

* :func:`connect_streamhost` connects to a streamhost (a peer's or a proxy)
  and runs the client side of the handshake for one address;
* :class:`Socks5Listener` is our own streamhost: it runs the server side and
  hands each connection to whoever waits for its address
  (``SHA-1(sid + requester + target)``, :func:`xfer.framing.socks5.dst_addr`),
  so any number of concurrent streams stay apart;
* :class:`Socks5Stream` is a :class:`~xfer.aio.bytestream.ByteStream` over a
  negotiated connection: TCP's own flow control is the backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from xfer.aio.addresses import streamhost_socket
from xfer.aio.tcp import BATCH, FLUSH_AFTER, TcpConnection, open_tcp
from xfer.errors import ConnectionFailed, RemoteProtocolError, TransferTimeout
from xfer.framing.socks5 import Socks5Client, Socks5Server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "Socks5Listener",
    "Socks5Stream",
    "abandon",
    "connect_streamhost",
    "parse_port",
]


class Socks5Stream:
    """A negotiated SOCKS5 bytestream (a ByteStream over TCP)."""

    def __init__(
        self,
        *,
        peer: str,
        sid: str,
        connection: TcpConnection,
        streamhost: str,
        idle_timeout: float = 120.0,
    ) -> None:
        self.peer = peer
        self.sid = sid
        self.streamhost = streamhost
        self.idle_timeout = idle_timeout
        self._connection = connection
        connection.enlarge()  # from the handshake's small buffer to bulk data's
        self._closed = False

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        async with self._reading():
            return await self._connection.read(max_bytes)

    async def readinto(self, buf: memoryview) -> int:
        """Like :meth:`read`, into ``buf`` (no ``bytes`` made); 0 at the end.
        While nothing is buffered, the kernel copies straight into ``buf``."""
        async with self._reading():
            return await self._connection.readinto(buf)

    def buffer_reads(self, nbytes: int) -> None:
        """Let up to ``nbytes`` wait received and unread (not less than
        now): while the reader is busy, more of the stream comes in, and its
        next :meth:`readinto` takes all of it at once. A read still returns
        as soon as anything came."""
        self._connection.enlarge(nbytes)

    def batch_reads(
        self, nbytes: int = BATCH, flush_after: float = FLUSH_AFTER
    ) -> None:
        """For a reader of bulk data: be woken once ``nbytes`` have come (or
        a read has waited ``flush_after`` seconds), not for every small
        piece a relay forwards (:meth:`~xfer.aio.tcp.TcpConnection.batch`)."""
        self._connection.batch(nbytes, flush_after)

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """One read: no data within the idle timeout aborts the stream
        (TransferTimeout), a socket error is ConnectionFailed. asyncio.timeout,
        not wait_for: no task per read (reads through a relay come 4 KiB at a
        time, and a task each cost half a core)."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                yield
        except TimeoutError:
            self.abort()
            raise TransferTimeout(
                f"SOCKS5 stream {self.sid}: no data for {self.idle_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectionFailed(f"SOCKS5 stream {self.sid}: {exc}") from exc

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._connection.is_closing():
            raise ConnectionFailed(
                f"SOCKS5 stream {self.sid}: the connection is closed"
            )
        try:
            await self._connection.write(data)
        except OSError as exc:
            raise ConnectionFailed(f"SOCKS5 stream {self.sid}: {exc}") from exc

    def moved(self) -> int:
        """Bytes received, and sent that left for the network, so far (see
        :mod:`xfer.aio.stall`)."""
        return self._connection.moved()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(
                self.idle_timeout
            ):  # a peer that stopped reading
                await self._connection.drain()
                self._connection.close()
                await self._connection.wait_closed()
        except TimeoutError:
            self.abort()
        except OSError:
            self._connection.abort()

    def abort(self, reason: str = "aborted") -> None:
        """Reset the connection (RST), so the peer sees an error, not an end."""
        self._closed = True
        self._connection.reset()


async def _handshake_byte(connection: TcpConnection) -> bytes:
    """One byte: the handshake is read byte by byte (some 50 bytes, from the
    connection's buffer), so no payload byte is ever taken out of order."""
    byte = await connection.read(1)
    if not byte:
        raise ConnectionFailed("the connection closed during the SOCKS5 handshake")
    return byte


def parse_port(text: str | None) -> int:
    """A streamhost's port as a peer wrote it; SOCKS's 1080 when absent.

    Raises:
        RemoteProtocolError: it is not a TCP port.
    """
    try:
        port = int(text or "1080")
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise RemoteProtocolError(f"invalid streamhost port {text!r}")
    return port


async def connect_streamhost(
    host: str, port: int, address: bytes, timeout: float
) -> TcpConnection:
    """Connect to a streamhost and run the client side of the handshake.

    Raises:
        OSError, TimeoutError: the connection failed or took too long.
        ConnectionFailed: the streamhost hung up during the handshake.
        RemoteProtocolError: it refused the address or broke the protocol.
    """
    connection = await asyncio.wait_for(open_tcp(host, port), timeout)
    try:
        machine = Socks5Client(address)
        await connection.write(machine.initial())
        async with asyncio.timeout(timeout):
            while not machine.done:
                out = machine.receive_data(await _handshake_byte(connection))
                if out:
                    await connection.write(out)
    except BaseException:
        connection.abort()
        raise
    return connection


def abandon(waiter: asyncio.Future[TcpConnection] | None) -> None:
    """Close a connection that reached our streamhost but will not be used."""
    if waiter is None:
        return
    if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
        waiter.result().abort()
    elif not waiter.done():
        waiter.cancel()


class Socks5Listener:
    """Our own streamhost: a TCP server running the SOCKS5 server handshake.

    A connection is let in only for an address someone waits for
    (:meth:`waiter` or :meth:`expect`); any other is refused. ``handshake_timeout``
    is asked for each new connection.
    """

    def __init__(self, *, handshake_timeout: Callable[[], float]) -> None:
        self._handshake_timeout = handshake_timeout
        self._pending: dict[bytes, asyncio.Future[TcpConnection]] = {}
        self._server: asyncio.Server | None = None
        self._last_port = 0
        self._listen_lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()

    async def listen(self, host: str) -> tuple[str, int]:
        """Our streamhost's (host, port), listening on ``host`` from now on
        (``""``: every address of this host, IPv4 and IPv6, on one port)."""
        async with self._listen_lock:  # concurrent callers share one server
            if self._server is None:
                # After a reconnection, the same port if it is still free: a
                # port forward (or an advertised address) keeps working.
                for port in dict.fromkeys((self._last_port, 0)):
                    try:
                        loop = asyncio.get_running_loop()
                        made = lambda: TcpConnection(on_made=self._on_made)  # noqa: E731
                        self._server = await (
                            loop.create_server(made, host, port)
                            if host
                            else loop.create_server(made, sock=streamhost_socket(port))
                        )
                        break
                    except OSError:
                        if port == 0:
                            raise
        assert self._server is not None
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        self._last_port = int(bound_port)
        return bound_host, bound_port

    def close(self, error: BaseException) -> None:
        """Stop listening; whoever waits for a connection gets ``error``."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending.clear()

    def waiter(self, address: bytes) -> asyncio.Future[TcpConnection]:
        """A future for the next connection for ``address``, until :meth:`forget`."""
        waiter: asyncio.Future[TcpConnection] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[address] = waiter
        return waiter

    def forget(self, address: bytes) -> None:
        """Accept no more connections for ``address``."""
        self._pending.pop(address, None)

    def expect(self, address: bytes) -> asyncio.Future[TcpConnection]:
        """The next connection to our streamhost for SOCKS5 ``address``.

        Cancel the future (or let it finish) to stop accepting it; a later
        connection for the same address is refused.
        """
        waiter = self.waiter(address)

        def forget(_: object) -> None:
            if self._pending.get(address) is waiter:
                del self._pending[address]
            if not waiter.cancelled():
                waiter.exception()  # retrieved: nobody may be waiting any more

        waiter.add_done_callback(forget)
        return waiter

    def _on_made(self, connection: TcpConnection) -> None:
        task = asyncio.ensure_future(self._on_connection(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connection(self, connection: TcpConnection) -> None:
        machine = Socks5Server(
            lambda address: (
                address in self._pending and not self._pending[address].done()
            )
        )
        try:
            async with asyncio.timeout(self._handshake_timeout()):
                while not machine.done:
                    out = machine.receive_data(await _handshake_byte(connection))
                    await connection.write(out)
        except (RemoteProtocolError, TimeoutError, OSError, ConnectionFailed):
            with contextlib.suppress(OSError):
                connection.transport.write(machine.refusal)
            connection.abort()
            return
        except BaseException:  # cancelled, or a bug: never leave the socket open
            connection.abort()
            raise
        assert machine.address is not None
        waiter = self._pending.get(machine.address)
        if waiter is None or waiter.done():  # the offer is over: too late
            connection.abort()
            return
        waiter.set_result(connection)
