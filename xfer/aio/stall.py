"""Stall detection that measures progress, not whole operations.

A data pump waits on its bytestream: for a write to be taken, for the next
bytes to come. On a slow link (a server that shapes its clients to a few
kB/s) one such wait can take minutes while bytes keep moving; it must not
be mistaken for a dead peer. :func:`stalling` fails a wait only once the
stream moved no byte at all, in either direction, for ``timeout`` seconds.

A stream says how far it got through an optional ``moved()`` method: a
count that grows with every byte it sent that the peer took (SOCKS5: that
left our process for the kernel; IBB: that the peer acknowledged) and every
byte it received. A stream without one is timed per wait, as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

from xfer.errors import TransferTimeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["moved_counter", "stalling"]

T = TypeVar("T")

#: The stream's progress is looked at this many times per ``timeout``: a
#: stall is reported between ``timeout`` and ``(1 + 1/_CHECKS) * timeout``
#: after the last byte moved.
_CHECKS = 4


def moved_counter(stream: object) -> Callable[[], int] | None:
    """The stream's ``moved`` method, if it has one."""
    moved = getattr(stream, "moved", None)
    return moved if callable(moved) else None


async def stalling(
    work: Awaitable[T],
    timeout: float | None,
    moved: Callable[[], int] | None,
    message: str,
) -> T:
    """Await ``work``; fail with :class:`TransferTimeout` (``message``,
    formatted with ``timeout``: ``"no data for {timeout:g} s"``) once
    ``moved()`` stayed the same for ``timeout`` seconds (or, without
    ``moved``, once ``work`` took ``timeout`` seconds). The time counts from
    the start of this wait or the last change, whichever is later.

    One timer per wait and no task (a wait is a slice of a bulk write, many
    a second on a fast link).
    """
    if timeout is None:
        return await work
    if moved is None:
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
            raise TransferTimeout(message.format(timeout=timeout)) from None
    loop = asyncio.get_running_loop()
    period = timeout / _CHECKS
    last = moved()
    since = loop.time()
    handle: asyncio.TimerHandle | None = None
    try:
        async with asyncio.timeout(None) as deadline:

            def check() -> None:
                nonlocal last, since, handle
                now = loop.time()
                count = moved()
                if count != last:
                    last, since = count, now
                if now - since >= timeout:
                    deadline.reschedule(now)  # expires at once: TimeoutError
                    handle = None
                else:
                    handle = loop.call_at(min(now + period, since + timeout), check)

            handle = loop.call_at(since + period, check)
            return await work
    except TimeoutError:
        raise TransferTimeout(message.format(timeout=timeout)) from None
    finally:
        if handle is not None:
            handle.cancel()
