"""The hostile server itself: a stanza-level man in the middle on loopback,
the methods that set its rules (drop, delay, hold, rewrite; the rules
themselves are in :mod:`xfer.testing.hostile.rules`) and the log of what it
saw."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.testing._listener import LoopbackListener
from xfer.testing.hostile.rules import Hold, Rule, _Item
from xfer.testing.hostile.stanzas import (
    _CHUNK,
    BIND_NS,
    CLIENT_NS,
    SASL_NS,
    SM_NAMESPACES,
    STREAM_NS,
    Direction,
    Directions,
    MalformedStream,
    Predicate,
    Stanza,
    StanzaSplitter,
    _qualify,
    _split_tag,
    serialize,
    to_element,
)

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Callable, Iterable


__all__ = [
    "Hold",
    "HostileServer",
    "Rule",
    "StanzaRecord",
]

log = logging.getLogger(__name__)

#: How long a closing connection may take to flush before it is aborted.
_CLOSE_TIMEOUT = 2.0


# -- the man in the middle -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StanzaRecord:
    """One element read from a side (:meth:`HostileServer.seen`) or written
    to one (:meth:`HostileServer.delivered`). Do not change ``element``."""

    direction: Direction
    element: ET.Element
    #: The bytes read or written.
    raw: bytes
    #: The event loop's clock (monotonic seconds).
    time: float
    #: Which client connection (0, 1, ... in the order accepted).
    connection: int
    #: Written by the hostile server itself (injected), not forwarded.
    injected: bool = False


@dataclass(frozen=True, slots=True)
class _Waiter:
    """A :meth:`HostileServer.wait_for` in progress."""

    predicate: Predicate
    direction: Directions
    delivered: bool
    future: asyncio.Future[StanzaRecord] = field(repr=False)


class _Connection:
    """One accepted client and its upstream connection to the server."""

    def __init__(self, serial: int, client: asyncio.StreamWriter) -> None:
        self.serial = serial
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.splitters: dict[Direction, StanzaSplitter] = {
            "to_client": StanzaSplitter(restart_after=_is_sasl_success),
            "to_server": StanzaSplitter(),
        }
        self.timers: set[asyncio.TimerHandle] = set()
        self.closed = False
        #: Fires when either side closed (or the proxy closed the connection).
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sink(self, direction: Direction) -> asyncio.StreamWriter:
        if direction == "to_client":
            return self.client
        if self.upstream is None:
            raise RuntimeError("the connection to the server is not open yet")
        return self.upstream

    def close(self, *, abort: bool = False) -> None:
        """Close both sides (``abort``: without flushing)."""
        if not self.gone.done():
            self.gone.set_result(None)
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        writers = [w for w in (self.client, self.upstream) if w is not None]
        if abort:
            for w in writers:
                w.transport.abort()
        elif not self.closed:
            for w in writers:
                w.close()
        self.closed = True


def _is_sasl_success(element: ET.Element) -> bool:
    return element.tag == f"{{{SASL_NS}}}success"


class HostileServer(LoopbackListener[_Connection]):
    """A stanza-level man in the middle between clients and an XMPP server.

    Each client connection to :attr:`host`:\\ :attr:`port` gets its own
    connection to ``upstream_host``:``upstream_port``. Rules and the logs
    are shared by all connections; injections go to the latest one that is
    open (a test has one client). Use it as an async context manager, or
    call :meth:`start` and :meth:`stop`.

    Args:
        strip_sm: remove the stream management feature from the server's
            ``<stream:features/>`` (see the module).
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, strip_sm: bool = True
    ) -> None:
        super().__init__()
        self._upstream = (upstream_host, upstream_port)
        self.strip_sm = strip_sm
        self._rules: list[Rule] = []
        self._seen: list[StanzaRecord] = []
        self._delivered: list[StanzaRecord] = []
        self._waiters: list[_Waiter] = []
        #: The full JID the server bound for the latest client (None before).
        self.client_jid: str | None = None
        #: How many ``<stream:features/>`` lost their stream management feature.
        self.sm_stripped = 0
        #: Exceptions raised by rules and hooks (each closed its connection).
        self.errors: list[BaseException] = []

    # -- life cycle ---------------------------------------------------------

    def _connection(self, serial: int, writer: asyncio.StreamWriter) -> _Connection:
        return _Connection(serial, writer)

    def _abort(self, conn: _Connection) -> None:
        conn.close(abort=True)

    def _after_relays(self) -> None:
        for entry in self._waiters:
            if not entry.future.done():
                entry.future.cancel()

    def disconnect(self) -> int:
        """Abort every open connection (both sides); returns how many."""
        conns = list(self._live.values())
        for conn in conns:
            conn.close(abort=True)
        return len(conns)

    # -- logs -----------------------------------------------------------------

    def seen(self, direction: Directions = "both") -> list[StanzaRecord]:
        """Every element read so far (from the client: ``to_server``; from
        the server: ``to_client``), before any rule, in order."""
        return [r for r in self._seen if direction in ("both", r.direction)]

    def delivered(self, direction: Directions = "both") -> list[StanzaRecord]:
        """Every element written so far (forwarded, rewritten, released,
        delayed or injected), in order."""
        return [r for r in self._delivered if direction in ("both", r.direction)]

    async def wait_for(
        self,
        predicate: Predicate,
        direction: Directions = "both",
        *,
        timeout: float = 10.0,
        past: bool = False,
        delivered: bool = False,
    ) -> StanzaRecord:
        """The next element read in ``direction`` for which ``predicate`` is
        true (with ``past``, also one already read; with ``delivered``, one
        written instead: what the receiving side got, injections included).

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        if past:
            records = self.delivered(direction) if delivered else self.seen(direction)
            for record in records:
                if predicate(record.element):
                    return record
        waiter: asyncio.Future[StanzaRecord] = (
            asyncio.get_running_loop().create_future()
        )
        entry = _Waiter(predicate, direction, delivered, waiter)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no matching stanza {direction} within {timeout:g} s"
            ) from None
        finally:
            self._waiters.remove(entry)

    # -- rules ------------------------------------------------------------------

    def on_stanza(
        self,
        hook: Callable[[Direction, ET.Element], Iterable[ET.Element] | None],
        direction: Directions = "both",
    ) -> Rule:
        """Call ``hook(direction, element)`` on each stanza: None lets it
        through unchanged (as its original bytes), otherwise the elements
        returned go on instead (none: it is dropped). Rules run in the
        order registered, each on what the ones before let through; the
        element must not be changed in place (copy it first)."""

        def act(_conn: _Connection, d: Direction, item: _Item) -> list[_Item] | None:
            out = hook(d, item.element)
            if out is None:
                return None
            return [_Item(_qualify(e, CLIENT_NS), None) for e in out]

        return self._add_rule(Rule(self, direction, act))

    def drop(self, predicate: Predicate, direction: Directions = "both") -> Rule:
        """Drop every stanza for which ``predicate`` is true."""

        def act(_conn: _Connection, _d: Direction, item: _Item) -> list[_Item] | None:
            return [] if predicate(item.element) else None

        return self._add_rule(Rule(self, direction, act))

    def delay(
        self,
        predicate: Predicate,
        seconds: float,
        direction: Directions = "both",
    ) -> Rule:
        """Send each matching stanza ``seconds`` later (others overtake it;
        later rules do not see it)."""
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, not {seconds}")

        def act(conn: _Connection, d: Direction, item: _Item) -> list[_Item] | None:
            if not predicate(item.element):
                return None
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                assert timer is not None
                conn.timers.discard(timer)
                if not conn.closed:
                    self._deliver(conn, d, item)

            timer = loop.call_later(seconds, fire)
            conn.timers.add(timer)
            return []

        return self._add_rule(Rule(self, direction, act))

    def hold(self, predicate: Predicate, direction: Directions = "both") -> Hold:
        """Keep matching stanzas back until :meth:`Hold.release` (which may
        reorder them) or :meth:`Hold.discard`."""
        rule = Hold(self, predicate, direction)
        self._add_rule(rule)
        return rule

    def rewrite(
        self,
        predicate: Predicate,
        fn: Callable[[ET.Element], ET.Element],
        direction: Directions = "both",
    ) -> Rule:
        """Send ``fn(copy)`` instead of each matching stanza (``fn`` gets a
        deep copy and may change and return it)."""

        def act(_conn: _Connection, _d: Direction, item: _Item) -> list[_Item] | None:
            if not predicate(item.element):
                return None
            return [_Item(_qualify(fn(copy.deepcopy(item.element)), CLIENT_NS), None)]

        return self._add_rule(Rule(self, direction, act))

    def clear_rules(self) -> int:
        """Remove every rule (stanzas held or delayed stay so); returns how many."""
        count = len(self._rules)
        self._rules.clear()
        return count

    def _add_rule(self, rule: Rule) -> Rule:
        self._rules.append(rule)
        return rule

    def _remove_rule(self, rule: Rule) -> None:
        with contextlib.suppress(ValueError):
            self._rules.remove(rule)

    # -- injection --------------------------------------------------------------

    def inject_to_client(self, stanza: ET.Element | str) -> ET.Element:
        """Send ``stanza`` (an element or XML text; an unqualified tag is in
        ``jabber:client``) to the client as the server's own, bypassing the
        rules. A stanza without ``to`` is addressed to :attr:`client_jid`.
        Returns the element sent.

        Raises:
            RuntimeError: no client is connected.
        """
        element = to_element(stanza)
        if element.get("to") is None and self.client_jid is not None:
            _, local = _split_tag(str(element.tag))
            if local in ("message", "presence", "iq"):
                element.set("to", self.client_jid)
        self._deliver(self._current(), "to_client", _Item(element, None), injected=True)
        return element

    def inject_to_server(self, stanza: ET.Element | str) -> ET.Element:
        """Send ``stanza`` to the server as if the client had sent it (leave
        ``from`` out: the server stamps the client's JID and refuses any
        other). Returns the element sent.

        Raises:
            RuntimeError: no client is connected.
        """
        element = to_element(stanza)
        self._deliver(self._current(), "to_server", _Item(element, None), injected=True)
        return element

    def _current(self) -> _Connection:
        for conn in reversed(self._live.values()):
            if not conn.closed and conn.upstream is not None:
                return conn
        raise RuntimeError("no client is connected through the hostile server")

    # -- relaying -----------------------------------------------------------------

    async def _serve(self, conn: _Connection, client: asyncio.StreamReader) -> None:
        try:
            try:
                from_server, conn.upstream = await asyncio.open_connection(
                    *self._upstream
                )
            except OSError:
                return  # the server is down: so is the connection
            if conn.closed:
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(conn, client, "to_server"))
                group.create_task(self._pump(conn, from_server, "to_client"))
        finally:
            await self._finish(conn)

    async def _finish(self, conn: _Connection) -> None:
        conn.close()
        for writer in (conn.client, conn.upstream):
            if writer is None:
                continue
            try:
                await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
            except (OSError, TimeoutError):
                writer.transport.abort()
            except asyncio.CancelledError:
                writer.transport.abort()
                raise
        self._live.pop(conn.serial, None)

    async def _pump(
        self, conn: _Connection, source: asyncio.StreamReader, direction: Direction
    ) -> None:
        """Relay one direction until either side closes."""
        splitter = conn.splitters[direction]
        try:
            while not conn.closed:
                read = asyncio.ensure_future(source.read(_CHUNK))
                try:
                    await asyncio.wait(
                        (read, conn.gone), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    if not read.done():
                        read.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await read
                if conn.closed or not read.done():
                    return
                data = read.result()
                if not data:
                    return
                for piece in splitter.feed(data):
                    if isinstance(piece, Stanza):
                        self._dispatch(conn, direction, piece)
                    elif not conn.closed:
                        conn.sink(direction).write(piece)
                if not conn.closed:
                    await conn.sink(direction).drain()
        except (OSError, MalformedStream) as exc:
            log.info(
                "hostile server: connection %d %s: %s", conn.serial, direction, exc
            )
        except Exception as exc:  # a rule or hook failed: report it, end the link
            log.exception("hostile server: a rule failed (%s)", direction)
            self.errors.append(exc)
        finally:
            conn.close()

    def _dispatch(
        self, conn: _Connection, direction: Direction, stanza: Stanza
    ) -> None:
        element = stanza.element
        loop = asyncio.get_running_loop()
        record = StanzaRecord(direction, element, stanza.raw, loop.time(), conn.serial)
        self._seen.append(record)
        self._notify(record, delivered=False)
        if direction == "to_client":
            self._learn(conn, element)
        items = [_Item(element, stanza.raw)]
        if direction == "to_client" and self.strip_sm:
            items = self._strip_sm(items)
        for rule in list(self._rules):
            if not items:
                break
            if not rule.applies(direction):
                continue
            passed: list[_Item] = []
            for item in items:
                out = rule.apply(conn, direction, item)
                passed.extend([item] if out is None else out)
            items = passed
        for item in items:
            self._deliver(conn, direction, item)

    def _notify(self, record: StanzaRecord, *, delivered: bool) -> None:
        for entry in list(self._waiters):
            if (
                entry.future.done()
                or entry.delivered != delivered
                or entry.direction not in ("both", record.direction)
            ):
                continue
            try:
                if entry.predicate(record.element):
                    entry.future.set_result(record)
            except Exception as exc:  # handed to the waiting test
                entry.future.set_exception(exc)

    def _learn(self, conn: _Connection, element: ET.Element) -> None:
        """Follow the stream: its restart after SASL, the bound JID."""
        if _is_sasl_success(element):
            # The client restarts its stream as soon as it reads this.
            for piece in conn.splitters["to_server"].restart():
                assert isinstance(piece, bytes)
                conn.sink("to_server").write(piece)
        elif element.tag == f"{{{CLIENT_NS}}}iq" and element.get("type") == "result":
            jid = element.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
            if jid is not None and jid.text:
                self.client_jid = jid.text.strip()

    def _strip_sm(self, items: list[_Item]) -> list[_Item]:
        out: list[_Item] = []
        for item in items:
            element = item.element
            if element.tag == f"{{{STREAM_NS}}}features" and any(
                _split_tag(str(c.tag))[0] in SM_NAMESPACES for c in element
            ):
                element = copy.deepcopy(element)
                for c in list(element):
                    if _split_tag(str(c.tag))[0] in SM_NAMESPACES:
                        element.remove(c)
                self.sm_stripped += 1
                out.append(_Item(element, None))
            else:
                out.append(item)
        return out

    def _deliver(
        self,
        conn: _Connection,
        direction: Direction,
        item: _Item,
        *,
        injected: bool = False,
    ) -> None:
        if conn.closed:
            return
        data = item.raw if item.raw is not None else serialize(item.element)
        conn.sink(direction).write(data)
        record = StanzaRecord(
            direction,
            item.element,
            data,
            asyncio.get_running_loop().time(),
            conn.serial,
            injected,
        )
        self._delivered.append(record)
        self._notify(record, delivered=True)
