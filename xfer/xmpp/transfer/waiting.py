"""Waiting on the peer's Jingle actions of one session: the next one of some
kinds, a transport-info, the end of the session while something else runs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

from xfer.errors import TransferTimeout, TransportError, XferError
from xfer.jingle import Action, SessionState
from xfer.jingle.wire import S5BTransport
from xfer.transfer.policy import broke_off
from xfer.xmpp.jingle import rejection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from xfer.aio.bytestream import ByteStream
    from xfer.jingle.wire import Jingle
    from xfer.xmpp.jingle import JingleSessionIO

__all__ = [
    "DRAIN_GRACE",
    "before_end",
    "expect",
    "expect_transport",
    "settle",
    "watching",
]

#: How long a receiver whose sender reported a break keeps reading what is
#: already on its way (seconds).
DRAIN_GRACE = 10.0


async def expect(
    session: JingleSessionIO, actions: set[Action], timeout: float | None
) -> Jingle:
    """The peer's next action among ``actions``, skipping informational ones
    (None: no time limit).

    Raises:
        TransferRejected / TransferDeclined: the peer ended the session
        (``reason`` "success" included, for the sender to recognise).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        left = None if deadline is None else max(deadline - loop.time(), 0.001)
        jingle = await session.next(left)
        if jingle.action is Action.SESSION_TERMINATE:
            raise rejection(session.peer, jingle)
        if jingle.action in actions:
            return jingle


async def expect_transport(
    session: JingleSessionIO,
    wanted: Callable[[S5BTransport], bool],
    timeout: float | None,
) -> S5BTransport:
    """The peer's next transport-info that ``wanted`` accepts, within
    ``timeout`` seconds in all (others in between do not extend it)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise TransferTimeout(f"{session.peer} did not report on SOCKS5")
        jingle = await expect(session, {Action.TRANSPORT_INFO}, left)
        t = jingle.content.transport if jingle.content else None
        if isinstance(t, S5BTransport) and wanted(t):
            if t.proxy_error:
                raise TransportError("the peer could not activate its proxy")
            return t


_T = TypeVar("_T")


async def before_end(session: JingleSessionIO, work: Awaitable[_T]) -> _T:
    """``work`` (opening a stream, waiting for one), unless the peer ends
    the session first: then what ended it is raised at once, not a timeout
    once ``work`` gives up."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(session.ending.wait())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        await expect(session, set(), 5.0)  # raises what ended it
        raise AssertionError("expect() returned for no action")  # pragma: no cover
    finally:
        await settle(task, watcher)


async def watching(
    session: JingleSessionIO,
    work: Awaitable[_T],
    stream: ByteStream,
    *,
    drain: bool = False,
) -> _T:
    """Run the data phase while listening for the peer ending the session;
    the work's result.

    The stream is closed when the work is done, aborted if it failed.
    With ``drain`` (the receiver), a session the peer ends because the
    transfer broke off lets the work first take in what already arrived
    (it is verified and kept for the resume), up to the stream's end.
    """
    task = asyncio.ensure_future(work)
    # The watcher only waits for the end to be *announced*; the
    # session-terminate itself stays in the inbox for whoever reads next.
    watcher = asyncio.ensure_future(session.ending.wait())
    try:
        done, _ = await asyncio.wait(
            {task, watcher}, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            result = task.result()
            with contextlib.suppress(XferError, OSError):
                await stream.close()
            return result
        # The peer went offline (no terminate, and no protocol error):
        # a break too, and its stream fails with it.
        gone = (
            session.terminated is None
            and session.machine.state is not SessionState.ERROR
        )
        if drain and (gone or broke_off(rejection(session.peer, session.terminated))):
            # What is still in flight ends soon: at the stream's end (or
            # its failure, which hands on what came before it).
            await asyncio.wait({task}, timeout=DRAIN_GRACE)
            if task.done() and not task.cancelled() and task.exception() is None:
                # All of it came and verified (the file is in place)
                # before the sender, cut off, heard so: that counts.
                with contextlib.suppress(XferError, OSError):
                    await stream.close()
                return task.result()
        # Ended (or failed) while data flowed: raise what ended it.
        await expect(session, set(), 5.0)
        raise AssertionError("expect() returned for no action")  # pragma: no cover
    except BaseException:
        stream.abort("the transfer failed")
        raise
    finally:
        await settle(task, watcher)


async def settle(*tasks: asyncio.Future[Any]) -> None:
    """Cancel what is still running and let it finish, without swallowing
    a cancellation of our own (the tasks then finish in the background)."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: its failure was handled or superseded
