"""slixmpp's ``SlixTest`` made to fit this project's pytest.

``SlixTest`` drives a client over a mock transport: stanzas in with
:meth:`recv`, stanzas out checked with :meth:`send`; no server, no network.
Two things do not fit as shipped, and :class:`StanzaCase` fixes them:

* it runs everything on ``asyncio.get_event_loop()``, a loop nobody closes;
  here each test gets a new loop, set as current for the test and closed
  after it (pending tasks cancelled first), so nothing leaks into the
  pytest-asyncio tests that run next;
* its ``TestSocket`` opens a real (never connected) socket and never closes
  it: under ``filterwarnings = error`` the ResourceWarning fails the run.

The tests are plain ``unittest`` methods, so ``asyncio_mode = auto`` leaves
them alone; a coroutine runs with :meth:`run_coro`, or as a task with
:meth:`start` while the test feeds it stanzas.

Where the code under test opens real sockets (SOCKS5 on loopback), the test
registers what to close with :meth:`StanzaCase.closing`; it runs before the
loop closes, so no socket outlives its test. :meth:`StanzaCase.streamhost`
is a peer's (or a proxy's) real SOCKS5 streamhost on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from slixmpp.test import SlixTest, TestTransport

from xfer.aio.socks5 import Socks5Listener
from xfer.errors import ConnectionFailed

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import ModuleType

    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.aio.tcp import TcpConnection

T = TypeVar("T")

#: The JID ``stream_start`` binds.
ME = "tester@localhost/resource"
PEER = "peer@example.org/laptop"


def result(iq_id: str, payload: str = "", *, frm: str = PEER) -> str:
    """An IQ result from ``frm`` to us, with ``payload`` (XML) if any."""
    return f'<iq type="result" id="{iq_id}" from="{frm}" to="{ME}">{payload}</iq>'


def iq_error(
    iq_id: str, condition: str, *, frm: str = PEER, etype: str = "cancel"
) -> str:
    """An IQ error from ``frm`` with the RFC 6120 ``condition``."""
    return (
        f'<iq type="error" id="{iq_id}" from="{frm}" to="{ME}">'
        f'<error type="{etype}"><{condition} '
        f'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
    )


class Transport(TestTransport):  # type: ignore[misc]
    """The mock transport, with what xfer's direct writes ask of a real one."""

    closing = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


class StanzaCase(SlixTest):  # type: ignore[misc]
    """A SlixTest client with the plugins in :attr:`plugins` registered.

    ``plugins`` holds ``(name, module, config)``; slixmpp's built-in plugins
    are not loaded unless listed.
    """

    plugins: ClassVar[tuple[tuple[str, ModuleType | None, dict[str, Any]], ...]] = ()

    def setUp(self) -> None:
        self._closers: list[Callable[[], object]] = []
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stream_start(plugins=[])
        self.xmpp.transport.__class__ = Transport
        for name, module, config in self.plugins:
            self.xmpp.register_plugin(name, config, module=module)

    def tearDown(self) -> None:
        for close in reversed(self._closers):
            close()
        if self._closers:
            self.wait_(0.01)  # let aborted transports close their sockets
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.stream_close()
        self.xmpp.socket.socket.close()
        self.loop.close()
        asyncio.set_event_loop(None)

    def plugin(self, name: str) -> Any:
        return self.xmpp.plugin[name]

    def closing(self, close: Callable[[], object]) -> None:
        """Call ``close`` at the end of the test, before the loop closes."""
        self._closers.append(close)

    def keep(self, connection: T) -> T:
        """A connection (anything with ``abort()``) aborted after the test."""
        self.closing(connection.abort)  # type: ignore[attr-defined]
        return connection

    def streamhost(
        self, address: bytes
    ) -> tuple[int, asyncio.Future[TcpConnection], Socks5Listener]:
        """A real SOCKS5 streamhost on 127.0.0.1 (a peer's, or a proxy)
        that lets in one connection for ``address``: its port, the future
        of that connection, and the listener (closed after the test)."""
        listener = Socks5Listener(handshake_timeout=lambda: 5.0)

        async def start() -> tuple[int, asyncio.Future[TcpConnection]]:
            _, port = await listener.listen("127.0.0.1")
            return port, listener.expect(address)

        port, waiter = self.run_coro(start())

        def close() -> None:
            listener.close(ConnectionFailed("the test is over"))
            if waiter.done() and not waiter.cancelled() and not waiter.exception():
                waiter.result().abort()

        self.closing(close)
        return port, waiter, listener

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task and let it get as far as it can."""
        task = self.loop.create_task(coro)
        self.wait_()
        return task

    def until(self, done: Callable[[], object], timeout: float = 10) -> None:
        """Run the loop until ``done()`` holds (work in a thread, say)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                self.fail("timed out waiting")
            self.wait_(0.005)

    def until_sent(self, timeout: float = 10) -> None:
        """Run the loop until the client sent something (after real I/O)."""

        def sent() -> bool:
            self.wait_for_send_queue()
            return not self.xmpp.socket.send_queue.empty()

        self.until(sent, timeout)

    def sent(self) -> StanzaBase:
        """The next stanza the client sent, as a slixmpp stanza object."""
        self.wait_for_send_queue()
        raw = self.xmpp.socket.next_sent()
        if raw is None:
            self.fail("no stanza was sent")
        xml = self.parse_xml(raw)
        self.fix_namespaces(xml)
        return self.xmpp._build_stanza(xml)

    def all_sent(self) -> list[StanzaBase]:
        """Every stanza sent and not yet taken."""
        out = []
        self.wait_for_send_queue()
        while not self.xmpp.socket.send_queue.empty():
            out.append(self.sent())
        return out

    def nothing_sent(self) -> None:
        self.wait_for_send_queue()
        raw = self.xmpp.socket.next_sent()
        assert raw is None, "a stanza was sent"
