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
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from slixmpp.test import SlixTest, TestTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import ModuleType

    from slixmpp.xmlstream.stanzabase import StanzaBase

T = TypeVar("T")

#: The JID ``stream_start`` binds.
ME = "tester@localhost/resource"
PEER = "peer@example.org/laptop"


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
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stream_start(plugins=[])
        self.xmpp.transport.__class__ = Transport
        for name, module, config in self.plugins:
            self.xmpp.register_plugin(name, config, module=module)

    def tearDown(self) -> None:
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
