"""The hostile server's rules: what it does to a stanza on its way through.

A :class:`Rule` wraps an action that the server
(:class:`~xfer.testing.hostile.server.HostileServer`) runs on each stanza
going in the rule's direction: the action lets the stanza through (None) or
returns what goes on instead (nothing: it is dropped). The server's ``drop``,
``delay``, ``rewrite`` and ``on_stanza`` make such rules; its ``hold`` makes
a :class:`Hold`, which keeps stanzas back until the test releases them, in
any order, or discards them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Callable, Sequence

    from xfer.testing.hostile.server import HostileServer, _Connection
    from xfer.testing.hostile.stanzas import Direction, Directions, Predicate

__all__ = ["Hold", "Rule"]


@dataclass(slots=True)
class _Item:
    """An element on its way out: ``raw`` is None once a rule changed it."""

    element: ET.Element
    raw: bytes | None


class Rule:
    """A registered rule. ``matched`` counts the stanzas it acted on;
    :meth:`remove` unregisters it."""

    def __init__(
        self,
        server: HostileServer,
        direction: Directions,
        act: Callable[[_Connection, Direction, _Item], list[_Item] | None],
    ) -> None:
        if direction not in ("to_client", "to_server", "both"):
            raise ValueError(f"not a direction: {direction!r}")
        self._server = server
        self.direction: Directions = direction
        self._act = act
        self.matched = 0

    def applies(self, direction: Direction) -> bool:
        return self.direction in ("both", direction)

    def apply(
        self, conn: _Connection, direction: Direction, item: _Item
    ) -> list[_Item] | None:
        out = self._act(conn, direction, item)
        if out is not None:
            self.matched += 1
        return out

    def remove(self) -> None:
        """Stop applying this rule (what it holds or delays is kept)."""
        self._server._remove_rule(self)


class Hold(Rule):
    """Keeps matching stanzas back until :meth:`release` (in any order) or
    :meth:`discard`."""

    def __init__(
        self,
        server: HostileServer,
        predicate: Predicate,
        direction: Directions,
    ) -> None:
        super().__init__(server, direction, self._keep)
        self._predicate = predicate
        self._held: list[tuple[_Connection, Direction, _Item]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def _keep(
        self, conn: _Connection, direction: Direction, item: _Item
    ) -> list[_Item] | None:
        if not self._predicate(item.element):
            return None
        self._held.append((conn, direction, item))
        for count, waiter in self._waiters:
            if len(self._held) >= count and not waiter.done():
                waiter.set_result(None)
        return []

    @property
    def held(self) -> list[ET.Element]:
        """The stanzas held now, in arrival order."""
        return [item.element for _, _, item in self._held]

    async def wait(self, count: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` stanzas are held.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        if len(self._held) >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.remove(entry)

    def release(self, order: Sequence[int] | None = None) -> int:
        """Stop holding and send what was held: in arrival order, or in
        ``order`` (indexes into :attr:`held`; those left out are dropped).
        Returns how many were sent (not those whose connection closed)."""
        self.remove()
        held, self._held = self._held, []
        chosen = [held[i] for i in (range(len(held)) if order is None else order)]
        sent = 0
        for conn, direction, item in chosen:
            if not conn.closed:
                self._server._deliver(conn, direction, item)
                sent += 1
        return sent

    def discard(self) -> int:
        """Stop holding and drop what was held; returns how many."""
        self.remove()
        dropped, self._held = len(self._held), []
        return dropped
