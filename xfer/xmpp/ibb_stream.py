"""One XEP-0047 in-band bytestream, both directions: :class:`IBBStream`.

It implements :class:`xfer.aio.bytestream.ByteStream` on top of the plugin
(:class:`xfer.xmpp.ibb.XferIBB`) that opened or accepted it: the plugin
routes the peer's packets and answers to the stream and writes its stanzas
to the transport. How a stream windows, buffers and answers errors is told
in :mod:`xfer.xmpp.ibb`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import TYPE_CHECKING

from slixmpp.stanza import Iq, Message

from xfer.errors import (
    ConnectionFailed,
    LocalProtocolError,
    TransferTimeout,
    TransportError,
)
from xfer.framing.ibb import (
    NS,
    AckPacer,
    IBBError,
    IBBReceiver,
    IBBSender,
    StreamState,
    _attr,
    data_iq,
    data_message,
)
from xfer.xmpp._slixmpp import ack

if TYPE_CHECKING:
    from xfer.xmpp.ibb import XferIBB

__all__ = ["IBBStream"]

#: Seconds a writer waits for the peer to acknowledge before giving up.
_ACK_TIMEOUT = 60.0


class IBBStream:
    """One in-band bytestream (both directions), as a ByteStream."""

    def __init__(
        self,
        plugin: XferIBB,
        *,
        peer: str,
        sid: str,
        block_size: int,
        window: int,
        use_messages: bool,
    ) -> None:
        self._plugin = plugin
        self.peer = peer
        self.sid = sid
        self.block_size = block_size
        self.use_messages = use_messages
        self._sender = IBBSender(block_size=block_size, window=window)
        self._pacer = AckPacer(
            block_size=block_size,
            window=window,
            horizon=plugin.config["pace_horizon"],
        )
        self._receiver = IBBReceiver(block_size=block_size)
        self._room = asyncio.Event()
        self._room.set()
        self._data_ready = asyncio.Event()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._max_buffer = max(window * block_size, 256 * 1024)
        self._deferred_acks: collections.deque[Iq] = collections.deque()
        self._eof = False
        self._error: TransportError | None = None
        self._closed = False
        self._window = window
        self._peer_closed = False
        self._msg_seq = 0
        #: Bytes the peer acknowledged (or, in message mode, that left for
        #: the server) and bytes received: see :meth:`moved`.
        self._moved = 0
        #: IQ ids of ours still awaiting the peer's answer.
        self._ids: set[str] = set()
        #: Seconds ``read`` waits for data before the stream is given up.
        self.idle_timeout = plugin.config["idle_timeout"]

    # -- failure -----------------------------------------------------------------

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self._sender.state = StreamState.FAILED
        while self._deferred_acks:  # answered, so the peer does not wait them out
            self._plugin._reply_error(
                self._deferred_acks.popleft(),
                "not-acceptable",
                "cancel",
                "stream failed",
            )
        self._room.set()
        self._data_ready.set()
        self._plugin._forget(self, self._error)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # -- writing ------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``; returns when it is handed to the network within the window.

        Raises:
            TransportError: the peer refused a packet, closed, or vanished.
        """
        view = memoryview(data)
        if self._closed:
            raise LocalProtocolError("the stream is closed for writing")
        start = 0
        while start < len(view):
            if self._peer_closed:
                raise ConnectionFailed(f"IBB stream {self.sid}: the peer closed it")
            if self.use_messages:
                block = bytes(view[start : start + self.block_size])
                start += len(block)
                await self._write_message(block)
                continue
            # The window, and within it the bytes the acknowledged rate
            # allows (xfer.framing.ibb.AckPacer), cut as large as it allows.
            while True:
                self._check()
                if self._peer_closed:
                    raise ConnectionFailed(f"IBB stream {self.sid}: the peer closed it")
                now = time.monotonic()
                size = min(self._pacer.packet(now), len(view) - start)
                sender = self._sender
                if sender.can_send() and self._pacer.allows(
                    sender.in_flight_bytes, size, now
                ):
                    break
                self._room.clear()
                await self._wait(self._room)
            block = bytes(view[start : start + size])
            start += size
            seq = self._sender.send(size)
            iq_id = self._plugin._next_id(self)
            self._plugin._expect(iq_id, self, seq)
            self._plugin._write(
                data_iq(to=self.peer, iq_id=iq_id, sid=self.sid, seq=seq, payload=block)
            )

    async def _write_message(self, block: bytes) -> None:
        self._check()
        seq, self._msg_seq = self._msg_seq, (self._msg_seq + 1) % 65536
        self._plugin._write(
            data_message(
                to=self.peer,
                msg_id=self._plugin._next_id(self),
                sid=self.sid,
                seq=seq,
                payload=block,
            )
        )
        await self._plugin._drain_transport()
        self._moved += len(block)

    async def _wait(self, event: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(_ACK_TIMEOUT):  # no task per wait
                await event.wait()
        except TimeoutError:
            self._fail(
                TransferTimeout(
                    f"IBB stream {self.sid}: the peer stopped acknowledging"
                )
            )
            raise self._error from None  # type: ignore[misc]

    def moved(self) -> int:
        """Bytes that moved so far: sent and acknowledged by the peer (in
        message mode: taken by the connection to the server), and received.
        A stall detector watches it grow (:mod:`xfer.aio.stall`)."""
        return self._moved

    async def drain(self) -> None:
        """Wait until every data packet sent so far is acknowledged."""
        while self._sender.in_flight:
            self._check()
            if self._peer_closed:
                raise ConnectionFailed(f"IBB stream {self.sid}: the peer closed it")
            self._room.clear()
            await self._wait(self._room)
        self._check()

    def _acked(self, seq: int, iq: Iq) -> None:
        if iq["type"] == "error":
            condition = iq["error"]["condition"]
            self._sender.failed(seq, condition)
            self._fail(
                TransportError(
                    f"IBB stream {self.sid}: the peer refused data ({condition})"
                )
            )
            return
        size = self._sender.acked(seq)
        self._moved += size
        self._pacer.acked(size, time.monotonic())
        self._room.set()

    # -- reading ------------------------------------------------------------------

    async def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Up to ``max_bytes`` of received data; ``b""`` once the peer closed.

        Raises:
            TransportError: the stream broke (the data before that was read).
        """
        while not self._buffer:
            if self._eof:
                return b""
            self._check()
            self._data_ready.clear()
            try:
                async with asyncio.timeout(self.idle_timeout):
                    await self._data_ready.wait()
            except TimeoutError:
                self._fail(
                    TransferTimeout(
                        f"IBB stream {self.sid}: no data for {self.idle_timeout:g} s"
                    )
                )
        out = bytearray()
        while self._buffer and len(out) < max_bytes:
            piece = self._buffer.popleft()
            take = max_bytes - len(out)
            if len(piece) > take:
                self._buffer.appendleft(piece[take:])
                piece = piece[:take]
            out += piece
        self._buffered -= len(out)
        self._release_acks()
        return bytes(out)

    def _release_acks(self) -> None:
        while self._deferred_acks and self._buffered <= self._max_buffer:
            ack(self._deferred_acks.popleft())

    def _on_data(self, stanza: Iq | Message) -> None:
        element = stanza.xml.find(f"{{{NS}}}data")
        text = (element.text or "") if element is not None else ""
        seq = element.get("seq", "") if element is not None else ""
        try:
            payload = self._receiver.data(seq, text.strip())
        except IBBError as exc:
            if isinstance(stanza, Iq):
                self._plugin._reply_error(stanza, exc.condition, exc.etype, str(exc))
            self._fail(TransportError(f"IBB stream {self.sid}: {exc}"))
            return
        if self._buffered > 2 * self._max_buffer:
            # Only a sender that ignores acknowledgements (or message mode
            # with a reader that stopped) gets here: refuse rather than grow.
            if isinstance(stanza, Iq):
                self._plugin._reply_error(
                    stanza, "resource-constraint", "wait", "receive buffer full"
                )
            self._fail(
                TransportError(f"IBB stream {self.sid}: receive buffer overflow")
            )
            return
        if payload:
            self._moved += len(payload)
            self._buffer.append(payload)
            self._buffered += len(payload)
            self._data_ready.set()
        if isinstance(stanza, Iq):
            if self._buffered <= self._max_buffer and not self._deferred_acks:
                ack(stanza)
            elif len(self._deferred_acks) >= 2 * self._window:
                # More unacknowledged packets than any window allows (empty
                # ones included): the peer ignores flow control.
                self._plugin._reply_error(
                    stanza,
                    "resource-constraint",
                    "wait",
                    "too many unacknowledged packets",
                )
                self._fail(
                    TransportError(f"IBB stream {self.sid}: peer ignores flow control")
                )
            else:
                self._deferred_acks.append(stanza)

    def _on_close(self) -> None:
        self._receiver.close()
        self._eof = True
        self._peer_closed = True  # XEP-0047: a close ends both directions
        self._room.set()
        self._data_ready.set()
        self._release_all_acks()

    def _release_all_acks(self) -> None:
        while self._deferred_acks:
            ack(self._deferred_acks.popleft())

    # -- closing ------------------------------------------------------------------

    async def close(self, *, timeout: float = 30) -> None:
        """Finish sending (wait for the last acknowledgements), then close."""
        if self._closed:
            return
        self._closed = True
        if self._eof or self._error is not None:
            # The peer closed (XEP-0047: that closes both directions) or the
            # stream broke: there is nobody left to say goodbye to.
            self._release_all_acks()
            self._plugin._forget(self)
            return
        try:
            if not self.use_messages:
                await self.drain()
            self._sender.close()
            iq_id = self._plugin._next_id(self)
            done = self._plugin._expect(iq_id, self, -1)
            self._plugin._write(
                f"<iq type='set' to='{_attr(self.peer)}' id='{_attr(iq_id)}'>"
                f"<close xmlns='{NS}' sid='{_attr(self.sid)}'/></iq>"
            )
            # XEP-0047: after a close "both MUST consider the stream closed",
            # whatever the answer; an error or silence changes nothing.
            with contextlib.suppress(TimeoutError, TransportError):
                await asyncio.wait_for(done, timeout)
        finally:
            self._release_all_acks()
            self._plugin._forget(self)

    def abort(self, reason: str = "aborted") -> None:
        """Drop the stream without the closing handshake."""
        self._closed = True
        self._fail(ConnectionFailed(f"IBB stream {self.sid}: {reason}"))
