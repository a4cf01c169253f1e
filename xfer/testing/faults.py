"""A TCP proxy on loopback that breaks connections on purpose, for tests.

Real networks drop connections half-way through a transfer, stall for a few
seconds, or are down altogether. :class:`FaultProxy` stands between a client
and a local server (a Prosody c2s port, a SOCKS5 streamhost or proxy) and
does exactly that, on demand, so that tests can check how the library copes:

* :meth:`FaultProxy.cut_all` aborts every live connection now;
* :meth:`FaultProxy.cut_after` aborts the first connection whose relayed byte
  count passes a limit (:meth:`FaultProxy.cut_randomly` draws the limit from a
  seeded generator, so a failing run can be replayed);
* :meth:`FaultProxy.stall` holds all data (nothing is lost) for a while;
* :meth:`FaultProxy.refuse` closes new connections as soon as they arrive;
* :meth:`FaultProxy.throttle` paces the data to a number of bytes a second
  (a slow or shaped link; nothing is lost).

Only for tests: it listens on 127.0.0.1 alone and uses the standard library
only. Every method is meant to be called from the event loop the proxy runs
on. Example::

    async with FaultProxy("127.0.0.1", c2s_port, seed=7) as proxy:
        ...  # connect the client to proxy.host, proxy.port
        proxy.cut_after(100_000, direction="down")
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass, field
from typing import Literal

from xfer.testing._listener import LoopbackListener

__all__ = ["DIRECTIONS", "Direction", "FaultProxy"]

#: ``"up"`` is client to target, ``"down"`` target to client.
Direction = Literal["up", "down", "both"]
DIRECTIONS: tuple[Direction, ...] = ("up", "down", "both")

_CHUNK = 64 * 1024
#: A throttled connection forwards at most this many bytes at a time ...
_SLICE = 2048
#: ... and its sockets (if throttled when it was accepted) receive into a
#: kernel buffer of this size.
_THROTTLED_BUFFER = 16 * 1024
#: How long a cut waits for the bytes before the cut point to reach the kernel.
_FLUSH_TIMEOUT = 2.0


def _small_buffers(*writers: asyncio.StreamWriter) -> None:
    """Shrink the kernel's receive buffers of a throttled connection: the
    kernel then takes a sender's data a few KiB at a time, as the rate
    lets it through, not in window updates of a loopback segment (64 KiB)
    from buffers that hold megabytes."""
    for writer in writers:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _THROTTLED_BUFFER)


@dataclass(eq=False)
class _Rule:
    """A pending :meth:`FaultProxy.cut_after`."""

    limit: int
    direction: Direction
    #: Close both sides with a FIN instead of a reset.
    graceful: bool = False
    #: (up, down) counts of the connections live when the rule was armed;
    #: connections accepted later count from zero.
    baseline: dict[int, tuple[int, int]] = field(default_factory=dict)

    def allowance(self, conn: _Connection) -> int:
        """Bytes ``conn`` may still relay before this rule cuts it."""
        base_up, base_down = self.baseline.get(conn.serial, (0, 0))
        up = conn.up - base_up
        down = conn.down - base_down
        if self.direction == "up":
            return self.limit - up
        if self.direction == "down":
            return self.limit - down
        return self.limit - up - down


class _Connection:
    """One accepted client and, once connected, its upstream to the target."""

    def __init__(self, serial: int, client: asyncio.StreamWriter) -> None:
        self.serial = serial
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.up = 0
        self.down = 0
        #: No more data may be forwarded (cut decided, or aborted).
        self.closing = False
        self.dead = False
        self.killed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Loop times before which a throttled direction sends nothing more.
        self._paced = [0.0, 0.0]

    def paced_until(self, up: bool) -> float:
        return self._paced[up]

    def pace(self, up: bool, until: float) -> None:
        self._paced[up] = until

    def kill(self) -> bool:
        """Abort both sides now; False if that had already happened."""
        if self.dead:
            return False
        self.dead = self.closing = True
        self.client.transport.abort()
        if self.upstream is not None:
            self.upstream.transport.abort()
        if not self.killed.done():
            self.killed.set_result(None)
        return True


class FaultProxy(LoopbackListener[_Connection]):
    """Relays TCP connections from 127.0.0.1 to a target, injecting faults.

    ``seed`` seeds the proxy's own :class:`random.Random`, used by
    :meth:`cut_randomly`. Use it as an async context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, target_host: str, target_port: int, *, seed: int | None = None
    ) -> None:
        super().__init__()
        self._target_host = target_host
        self._target_port = target_port
        self._random = random.Random(seed)  # noqa: S311 - faults, not secrets
        self._rules: list[_Rule] = []
        self._refusing = False
        self._stalled = False
        self._resumed: asyncio.Future[None] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._connections = 0
        self._bytes_relayed = 0
        self._cuts = 0
        #: Bytes a second each direction of a connection may carry, or None.
        self._rate: float | None = None

    # -- life cycle ---------------------------------------------------------

    def _on_stop(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    # -- state --------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections accepted so far, refused ones included."""
        return self._connections

    @property
    def bytes_relayed(self) -> int:
        """Bytes forwarded so far, both directions together."""
        return self._bytes_relayed

    @property
    def cuts(self) -> int:
        """Connections aborted by :meth:`cut_all` or a cut rule."""
        return self._cuts

    @property
    def stalled(self) -> bool:
        """Whether forwarding is held (see :meth:`stall`)."""
        return self._stalled

    # -- faults -------------------------------------------------------------

    def cut_all(self) -> int:
        """Abort every live connection (both sides); returns how many."""
        cut = sum(conn.kill() for conn in list(self._live.values()))
        self._cuts += cut
        return cut

    def cut_after(
        self, n_bytes: int, *, direction: Direction = "both", graceful: bool = False
    ) -> None:
        """Abort the first connection that relays more than ``n_bytes``.

        Bytes are counted per connection, in ``direction`` (``"up"``: client
        to target, ``"down"``: target to client, ``"both"``: their sum), from
        now on for connections already open, from their start for new ones.
        Exactly ``n_bytes`` are forwarded, then both sides are aborted. The
        rule is spent after one cut; several rules may be pending at once.
        """
        if direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be one of {DIRECTIONS}, not {direction!r}"
            )
        if n_bytes < 0:
            raise ValueError(f"n_bytes must not be negative, not {n_bytes}")
        baseline = {c.serial: (c.up, c.down) for c in self._live.values()}
        self._rules.append(_Rule(n_bytes, direction, graceful, baseline))

    def clear_rules(self) -> int:
        """Forget the cut rules not spent yet; returns how many there were."""
        pending = len(self._rules)
        self._rules.clear()
        return pending

    def cut_randomly(self, max_bytes: int, *, direction: Direction = "both") -> int:
        """:meth:`cut_after` a seeded random count in [1, max_bytes]; returns it."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        n_bytes = self._random.randint(1, max_bytes)
        self.cut_after(n_bytes, direction=direction)
        return n_bytes

    def stall(self, seconds: float) -> None:
        """Hold all data, both ways, on every connection for ``seconds``.

        Data is kept, not dropped, and flows again afterwards. Replaces any
        earlier stall.
        """
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, not {seconds}")
        loop = asyncio.get_running_loop()
        self.stall_forever()
        self._stall_timer = loop.call_later(seconds, self.resume)

    def stall_forever(self) -> None:
        """Hold all data until :meth:`resume`."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._stalled = True

    def resume(self) -> None:
        """End a stall: held data flows again."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._stalled = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def throttle(self, bytes_per_second: float | None) -> None:
        """Pace every connection, each direction on its own, to
        ``bytes_per_second`` (None: no limit); it applies at once, to live
        connections too. Data is forwarded in slices of at most
        :data:`_SLICE` bytes, each when the rate allows it: a slow link,
        not a lossy one. Connections accepted while throttled also get small
        kernel receive buffers, so that a sender feels the rate at once."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(
                f"bytes_per_second must be positive, not {bytes_per_second}"
            )
        self._rate = bytes_per_second

    @property
    def rate(self) -> float | None:
        """The pace set with :meth:`throttle`, or None."""
        return self._rate

    def refuse(self, on: bool) -> None:
        """While on, close new connections as soon as they are accepted."""
        self._refusing = on

    # -- relaying -----------------------------------------------------------

    def _admit(self) -> bool:
        self._connections += 1
        return not self._refusing

    def _connection(self, serial: int, writer: asyncio.StreamWriter) -> _Connection:
        return _Connection(serial, writer)

    def _abort(self, conn: _Connection) -> None:
        conn.kill()

    async def _serve(self, conn: _Connection, client: asyncio.StreamReader) -> None:
        try:
            try:
                from_target, conn.upstream = await asyncio.open_connection(
                    self._target_host, self._target_port
                )
            except OSError:
                conn.kill()  # the target is down: so is the connection
                return
            if conn.dead:  # cut while connecting
                conn.upstream.transport.abort()
                return
            if self._rate is not None:
                _small_buffers(conn.client, conn.upstream)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(conn, client, conn.upstream, up=True))
                group.create_task(self._pump(conn, from_target, conn.client, up=False))
            if not conn.dead:
                conn.closing = True
                for writer in (conn.client, conn.upstream):
                    writer.close()
                for writer in (conn.client, conn.upstream):
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        finally:
            conn.kill()
            del self._live[conn.serial]

    async def _pump(
        self,
        conn: _Connection,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        up: bool,
    ) -> None:
        """Forward one direction until EOF, a cut or an error."""
        try:
            while True:
                # Throttled, small reads: what waits is held by the kernel
                # and flows out evenly, not in bursts of a whole chunk.
                data = await source.read(_CHUNK if self._rate is None else _SLICE)
                if conn.closing:
                    return
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                if self._stalled and not await self._held(conn):
                    return
                rule = self._cut_point(conn, len(data), up=up)
                if rule is not None:
                    conn.closing = True  # the other direction stops too
                    cut_at = max(rule.allowance(conn), 0)
                    await self._cut(conn, sink, data[:cut_at], up=up, rule=rule)
                    return
                if self._rate is None:
                    self._forward(conn, sink, data, up=up)
                    await sink.drain()
                elif not await self._paced(conn, sink, data, up=up):
                    return
        except OSError:
            conn.kill()  # a reset on one side resets the other

    async def _paced(
        self, conn: _Connection, sink: asyncio.StreamWriter, data: bytes, *, up: bool
    ) -> bool:
        """Forward ``data`` in slices, each once the rate allows it (the
        rate is read again for each); False if the connection closed
        meanwhile."""
        loop = asyncio.get_running_loop()
        for i in range(0, len(data), _SLICE):
            piece = data[i : i + _SLICE]
            rate = self._rate
            if rate is not None:
                due = conn.paced_until(up)
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                conn.pace(up, max(due, loop.time()) + len(piece) / rate)
            if conn.closing or (self._stalled and not await self._held(conn)):
                return False
            self._forward(conn, sink, piece, up=up)
            await sink.drain()
        return True

    async def _held(self, conn: _Connection) -> bool:
        """Wait for the stall to end; False if the connection closed meanwhile."""
        while self._stalled and not conn.closing:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await asyncio.wait(
                (self._resumed, conn.killed), return_when=asyncio.FIRST_COMPLETED
            )
        return not conn.closing

    def _cut_point(self, conn: _Connection, size: int, *, up: bool) -> _Rule | None:
        """The rule that cuts ``conn`` within the next ``size`` bytes, if
        any (spent: removed from the pending rules)."""
        chosen: _Rule | None = None
        chosen_allowance = 0
        for rule in self._rules:
            if rule.direction == ("down" if up else "up"):
                continue
            allowance = rule.allowance(conn)
            if size > allowance and (chosen is None or allowance < chosen_allowance):
                chosen, chosen_allowance = rule, allowance
        if chosen is None:
            return None
        self._rules.remove(chosen)
        return chosen

    def _forward(
        self, conn: _Connection, sink: asyncio.StreamWriter, data: bytes, *, up: bool
    ) -> None:
        sink.write(data)
        if up:
            conn.up += len(data)
        else:
            conn.down += len(data)
        self._bytes_relayed += len(data)

    async def _cut(
        self,
        conn: _Connection,
        sink: asyncio.StreamWriter,
        data: bytes,
        *,
        up: bool,
        rule: _Rule,
    ) -> None:
        """Forward ``data``, let it reach the kernel, then abort ``conn`` (or
        close both sides, for a graceful rule: the peers see an end of
        stream after every byte before the cut)."""
        try:
            if data:
                self._forward(conn, sink, data, up=up)
            # A zero high-water mark makes drain() wait for an empty buffer:
            # abort() would drop whatever is still in it.
            sink.transport.set_write_buffer_limits(high=0)
            await asyncio.wait_for(sink.drain(), _FLUSH_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            if rule.graceful and not conn.dead:
                conn.dead = True
                for writer in (conn.client, conn.upstream):
                    if writer is not None:
                        writer.close()
                if not conn.killed.done():
                    conn.killed.set_result(None)
                self._cuts += 1
            elif conn.kill():
                self._cuts += 1
