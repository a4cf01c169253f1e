"""XEP-0047 In-Band Bytestreams on slixmpp, windowed and with backpressure.

The plugin ``xfer_ibb`` (a project name, so it never replaces slixmpp's own
``xep_0047``; it reuses that plugin's stanza classes) opens and accepts
streams. An :class:`IBBStream` implements :class:`xfer.aio.bytestream.ByteStream`:

* ``write`` sends data packets as pre-serialised XML, keeping up to
  ``window`` IQs outstanding (the rules are in :mod:`xfer.framing.ibb`);
  in message mode, where nothing is acknowledged, it waits for the socket's
  write buffer to drain instead, so memory stays bounded either way;
* received packets go into a bounded buffer and are acknowledged only while
  it has room, so a reader that stops reading stalls the sender instead of
  filling memory;
* the XEP's errors are answered as it says (unknown sid: item-not-found,
  out-of-order seq: unexpected-request and the stream closes, bad base64:
  bad-request, oversized block: not-acceptable).

The stanza ordering matters: data packets are written straight to the
transport, so the open and close IQs are written the same way, after the
data they follow.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
from typing import TYPE_CHECKING, ClassVar

from slixmpp.plugins.base import BasePlugin
from slixmpp.plugins.xep_0047.stanza import Close, Data, Open
from slixmpp.stanza import Iq, Message
from slixmpp.xmlstream import register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath
from slixmpp.xmlstream.matcher.base import MatcherBase

from xfer.errors import (
    ConnectionFailed,
    LocalProtocolError,
    TransferTimeout,
    TransportError,
)
from xfer.framing.ibb import (
    DEFAULT_BLOCK_SIZE,
    MAX_BLOCK_SIZE,
    NS,
    IBBError,
    IBBReceiver,
    IBBSender,
    StreamState,
    _attr,
    data_iq,
    data_message,
    negotiate_block_size,
)
from xfer.xmpp._slixmpp import (
    DirectedPresence,
    ack,
    error_reply,
    wait_for_room,
    write_raw,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

__all__ = ["IBBStream", "XferIBB"]

#: Unacknowledged data IQs a sender keeps in flight.
DEFAULT_WINDOW = 8
#: In message mode, wait while the socket holds more than this unsent.
_WRITE_HIGH_WATER = 1 << 20
_ACK_TIMEOUT = 60.0


class _PendingIds(MatcherBase):
    """Matches IQ results and errors whose id one of our streams awaits."""

    def __init__(self, pending: dict[str, IBBStream]) -> None:
        super().__init__(pending)
        self._pending = pending

    def match(self, xml: StanzaBase) -> bool:
        if xml.name != "iq" or xml["type"] not in ("result", "error"):
            return False
        stream = self._pending.get(xml["id"])
        # Only the peer may answer: anyone else guessing an id is ignored.
        return stream is not None and xml["from"].full == stream.peer


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
        for start in range(0, len(view), self.block_size):
            if self._peer_closed:
                raise ConnectionFailed(f"IBB stream {self.sid}: the peer closed it")
            block = bytes(view[start : start + self.block_size])
            if self.use_messages:
                await self._write_message(block)
                continue
            while not self._sender.can_send():
                self._check()
                if self._peer_closed:
                    raise ConnectionFailed(f"IBB stream {self.sid}: the peer closed it")
                self._room.clear()
                await self._wait(self._room)
            self._check()
            seq = self._sender.send(len(block))
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
        self._sender.acked(seq)
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


class XferIBB(BasePlugin):
    """xfer's XEP-0047 plugin: ``client.register_plugin("xfer_ibb")``.

    Config: ``max_block_size`` (largest block we accept), ``window``,
    ``authorize`` (a callable ``(peer, sid, block_size) -> bool`` deciding
    whether to accept an incoming stream; default: refuse all).
    """

    name = "xfer_ibb"
    description = "XEP-0047: In-Band Bytestreams (xfer: windowed, with backpressure)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {
        "max_block_size": MAX_BLOCK_SIZE,
        "window": DEFAULT_WINDOW,
        "authorize": None,
        "idle_timeout": 120.0,
    }

    def plugin_init(self) -> None:
        register_stanza_plugin(Iq, Open)
        register_stanza_plugin(Iq, Close)
        register_stanza_plugin(Iq, Data)
        register_stanza_plugin(Message, Data)
        self._streams: dict[tuple[str, str], IBBStream] = {}
        self._pending: dict[str, IBBStream] = {}
        self._pending_seq: dict[str, int] = {}
        self._close_waiters: dict[str, asyncio.Future[None]] = {}
        self._id_prefix = secrets.token_hex(6)
        self._id_counter = itertools.count()
        self._incoming: asyncio.Queue[IBBStream] = asyncio.Queue()
        #: (peer, sid) -> waiter, for streams another protocol (Jingle) agreed on.
        self._expected: dict[tuple[str, str], asyncio.Future[IBBStream]] = {}
        self._presence = DirectedPresence(self.xmpp)
        xmpp = self.xmpp
        xmpp.register_handler(
            Callback("xfer_ibb acks", _PendingIds(self._pending), self._on_ack)
        )
        xmpp.register_handler(
            Callback("xfer_ibb open", StanzaPath("iq@type=set/ibb_open"), self._on_open)
        )
        xmpp.register_handler(
            Callback("xfer_ibb data", StanzaPath("iq@type=set/ibb_data"), self._on_data)
        )
        xmpp.register_handler(
            Callback("xfer_ibb msg data", StanzaPath("message/ibb_data"), self._on_data)
        )
        xmpp.register_handler(
            Callback(
                "xfer_ibb close", StanzaPath("iq@type=set/ibb_close"), self._on_close
            )
        )
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("presence_unavailable", self._on_peer_gone)

    def plugin_end(self) -> None:
        for name in ("acks", "open", "data", "msg data", "close"):
            self.xmpp.remove_handler(f"xfer_ibb {name}")

    # -- opening ------------------------------------------------------------------

    async def open(
        self,
        peer: str,
        *,
        sid: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int | None = None,
        use_messages: bool = False,
        timeout: float = 30,
    ) -> IBBStream:
        """Open a stream to ``peer`` (a full JID).

        Raises:
            TransportError: the peer refused (its error condition is in the message).
        """
        sid = sid or secrets.token_hex(8)
        stream = IBBStream(
            self,
            peer=peer,
            sid=sid,
            block_size=block_size,
            window=window or self.config["window"],
            use_messages=use_messages,
        )
        self._streams[peer, sid] = stream
        self._announce(peer)
        iq_id = self._next_id(stream)
        done = self._expect(iq_id, stream, -1)
        stanza = "message" if use_messages else "iq"
        self._write(
            f"<iq type='set' to='{_attr(peer)}' id='{_attr(iq_id)}'><open xmlns='{NS}' "
            f"block-size='{block_size}' sid='{_attr(sid)}' stanza='{stanza}'/></iq>"
        )
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            self._forget(stream)
            raise TransferTimeout(f"no answer to the IBB open from {peer}") from None
        except TransportError:
            self._forget(stream)
            raise
        return stream

    async def accept(self, timeout: float | None = None) -> IBBStream:
        """The next incoming stream that ``authorize`` let in."""
        return await asyncio.wait_for(self._incoming.get(), timeout)

    def expect(self, peer: str, sid: str) -> asyncio.Future[IBBStream]:
        """Accept the stream ``peer`` will open with ``sid`` (agreed elsewhere,
        as in Jingle XEP-0261), whatever ``authorize`` says; the future gets
        it. Cancel the future to stop expecting it."""
        waiter: asyncio.Future[IBBStream] = asyncio.get_running_loop().create_future()
        self._expected[peer, sid] = waiter
        waiter.add_done_callback(lambda _: self._expected.pop((peer, sid), None))
        return waiter

    # -- plumbing for streams ------------------------------------------------

    def _announce(self, peer: str) -> None:
        self._presence.announce(peer)  # its streams then fail if we go offline

    def _write(self, text: str) -> None:
        write_raw(self.xmpp, text)

    async def _drain_transport(self) -> None:
        await wait_for_room(self.xmpp, _WRITE_HIGH_WATER)

    def _next_id(self, stream: IBBStream) -> str:
        iq_id = f"xibb-{self._id_prefix}-{next(self._id_counter)}"
        stream._ids.add(iq_id)
        return iq_id

    def _expect(self, iq_id: str, stream: IBBStream, seq: int) -> asyncio.Future[None]:
        self._pending[iq_id] = stream
        self._pending_seq[iq_id] = seq
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seq < 0:
            self._close_waiters[iq_id] = future
        return future

    def _forget(self, stream: IBBStream, error: BaseException | None = None) -> None:
        if self._streams.get((stream.peer, stream.sid)) is stream:
            del self._streams[stream.peer, stream.sid]
        if error is None:
            return
        for iq_id in stream._ids:
            self._pending.pop(iq_id, None)
            self._pending_seq.pop(iq_id, None)
            waiter = self._close_waiters.pop(iq_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        stream._ids.clear()

    def _reply_error(self, iq: Iq, condition: str, etype: str, text: str) -> None:
        error_reply(iq, condition, etype, text=text, keep_payload=True)

    # -- handlers ------------------------------------------------------------

    def _on_ack(self, iq: StanzaBase) -> None:
        assert isinstance(iq, Iq)
        iq_id = iq["id"]
        stream = self._pending.pop(iq_id, None)
        seq = self._pending_seq.pop(iq_id, -1)
        if stream is None:
            return
        stream._ids.discard(iq_id)
        waiter = self._close_waiters.pop(iq_id, None)
        if waiter is not None:
            if iq["type"] == "error" and not waiter.done():
                waiter.set_exception(
                    TransportError(
                        f"{stream.peer} refused the stream: {iq['error']['condition']}"
                    )
                )
            elif not waiter.done():
                waiter.set_result(None)
            return
        stream._acked(seq, iq)

    def _on_open(self, iq: StanzaBase) -> None:
        assert isinstance(iq, Iq)
        peer, sid = iq["from"].full, iq["ibb_open"]["sid"]
        try:
            block_size = negotiate_block_size(
                int(iq["ibb_open"]["block_size"] or 0), self.config["max_block_size"]
            )
        except (IBBError, ValueError) as exc:
            condition = exc.condition if isinstance(exc, IBBError) else "bad-request"
            etype = exc.etype if isinstance(exc, IBBError) else "cancel"
            self._reply_error(iq, condition, etype, str(exc))
            return
        authorize: Callable[[str, str, int], bool] | None = self.config["authorize"]
        expected = self._expected.get((peer, sid))
        if expected is not None and expected.done():
            expected = None
        if (
            not sid
            or (peer, sid) in self._streams
            or (
                expected is None
                and (authorize is None or not authorize(peer, sid, block_size))
            )
        ):
            self._reply_error(iq, "not-acceptable", "cancel", "stream refused")
            return
        stream = IBBStream(
            self,
            peer=peer,
            sid=sid,
            block_size=block_size,
            window=self.config["window"],
            use_messages=iq["ibb_open"]["stanza"] == "message",
        )
        self._streams[peer, sid] = stream
        self._announce(peer)
        ack(iq)
        if expected is not None:
            expected.set_result(stream)
        else:
            self._incoming.put_nowait(stream)

    def _on_data(self, stanza: StanzaBase) -> None:
        assert isinstance(stanza, Iq | Message)
        stream = self._streams.get((stanza["from"].full, stanza["ibb_data"]["sid"]))
        if stream is None:
            if isinstance(stanza, Iq):
                self._reply_error(stanza, "item-not-found", "cancel", "no such stream")
            return
        stream._on_data(stanza)

    def _on_close(self, iq: StanzaBase) -> None:
        assert isinstance(iq, Iq)
        stream = self._streams.pop((iq["from"].full, iq["ibb_close"]["sid"]), None)
        if stream is None:
            self._reply_error(iq, "item-not-found", "cancel", "no such stream")
            return
        stream._on_close()
        ack(iq)

    def _on_peer_gone(self, presence: StanzaBase) -> None:
        """The peer's resource went offline: its streams can never finish."""
        gone = presence["from"].full
        for stream in list(self._streams.values()):
            if stream.peer == gone:
                stream._fail(
                    ConnectionFailed(f"IBB stream {stream.sid}: {gone} went offline")
                )

    def _on_disconnected(self, _event: object) -> None:
        for stream in list(self._streams.values()):
            stream._fail(
                ConnectionFailed(f"IBB stream {stream.sid}: the XMPP connection closed")
            )
        for waiter in self._close_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionFailed("the XMPP connection closed"))


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_ibb = XferIBB
