"""XEP-0047 In-Band Bytestreams on slixmpp, windowed and with backpressure.

The plugin ``xfer_ibb`` (a project name, so it never replaces slixmpp's own
``xep_0047``; it reuses that plugin's stanza classes) opens and accepts
streams. An :class:`~xfer.xmpp.ibb_stream.IBBStream` (in
:mod:`xfer.xmpp.ibb_stream`) implements :class:`xfer.aio.bytestream.ByteStream`:

* ``write`` sends data packets as pre-serialised XML, keeping up to
  ``window`` IQs outstanding, and no more bytes than the peer acknowledged
  in the last ``pace_horizon`` seconds (the rules are in
  :mod:`xfer.framing.ibb`);
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
    TransferTimeout,
    TransportError,
)
from xfer.framing.ibb import (
    DEFAULT_BLOCK_SIZE,
    MAX_BLOCK_SIZE,
    NS,
    PACE_HORIZON,
    IBBError,
    _attr,
    negotiate_block_size,
)
from xfer.xmpp._slixmpp import (
    DirectedPresence,
    ack,
    error_reply,
    wait_for_room,
    write_raw,
)
from xfer.xmpp.ibb_stream import IBBStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

__all__ = ["IBBStream", "XferIBB"]

#: Unacknowledged data IQs a sender keeps in flight.
DEFAULT_WINDOW = 8
#: In message mode, wait while the socket holds more than this unsent.
_WRITE_HIGH_WATER = 1 << 20


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


class XferIBB(BasePlugin):
    """xfer's XEP-0047 plugin: ``client.register_plugin("xfer_ibb")``.

    Config: ``max_block_size`` (largest block we accept), ``window``,
    ``pace_horizon`` (a sender keeps in flight what was acknowledged in
    this many seconds, :class:`~xfer.framing.ibb.AckPacer`), ``authorize``
    (a callable ``(peer, sid, block_size) -> bool`` deciding whether to
    accept an incoming stream; default: refuse all).
    """

    name = "xfer_ibb"
    description = "XEP-0047: In-Band Bytestreams (xfer: windowed, with backpressure)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {
        "max_block_size": MAX_BLOCK_SIZE,
        "window": DEFAULT_WINDOW,
        "authorize": None,
        "idle_timeout": 120.0,
        "pace_horizon": PACE_HORIZON,
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
        except (TransportError, asyncio.CancelledError):
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
