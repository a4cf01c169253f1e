"""The notices board: what peers send that xfer does not take, for the
application (:mod:`xfer.notices`).

Every notice goes through the :class:`~xfer.notices.RateLimit` first; one
that passes is raised as the slixmpp event ``xfer_notice`` and waits for
:meth:`NoticeBoard.next`. At most :data:`MAX_WAITING` wait: an application
that never asks loses the oldest, never memory. Together, the rate limit
and the queue bound what a flood costs (a hostile peer, or a server that
makes up any number of accounts): a few lines a second on a terminal, a few
dozen notices in memory.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from xfer.errors import TransferTimeout
from xfer.notices import RateLimit

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.notices import Notice

__all__ = ["MAX_WAITING", "NoticeBoard"]

log = logging.getLogger(__name__)

#: Notices waiting for the application, at most (the oldest go first).
MAX_WAITING = 32


class NoticeBoard:
    """Rate-limits notices, raises them as events and queues them."""

    def __init__(
        self,
        emit: Callable[[str, object], None],
        *,
        limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._emit = emit
        self._limit = RateLimit() if limit is None else limit
        self._clock = clock
        self._waiting: collections.deque[Notice] = collections.deque(maxlen=max_waiting)
        self._posted = asyncio.Event()
        #: Notices the rate limit held back, in all (for logs and tests).
        self.held_back = 0

    def post(self, notice: Notice) -> bool:
        """Pass ``notice`` on unless the rate limit holds it back; whether
        it passed."""
        held = self._limit.admit(notice.peer, self._clock())
        if held is None:
            self.held_back += 1
            log.debug("held back a notice from %r (rate limit)", notice.peer)
            return False
        if held:
            notice = dataclasses.replace(notice, suppressed=held)
        self._waiting.append(notice)  # a full deque drops the oldest
        self._posted.set()
        self._emit("xfer_notice", notice)
        return True

    def waiting(self) -> list[Notice]:
        """The notices nobody took yet, oldest first."""
        return list(self._waiting)

    async def next(self, timeout: float | None = None) -> Notice:
        """The oldest notice nobody took yet, waiting for one.

        Raises:
            TransferTimeout: none within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._waiting:
            self._posted.clear()
            left = None if deadline is None else max(deadline - loop.time(), 0)
            try:
                await asyncio.wait_for(self._posted.wait(), left)
            except TimeoutError:
                raise TransferTimeout("no peer sent anything") from None
        return self._waiting.popleft()
