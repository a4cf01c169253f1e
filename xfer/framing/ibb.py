"""In-Band Bytestreams (XEP-0047 2.0.1) framing rules, sans-I/O.

Theory of operation
-------------------
A stream is opened with a block size (at most 65535 raw bytes per data
packet) and carries data packets numbered by a 16-bit ``seq`` that starts at
0 and wraps from 65535 to 0, one counter per direction.

The sender side here is *windowed*: XEP-0047 recommends waiting for each
data IQ's result but allows sending further packets before ("need not wait");
RFC 6120 section 10.1 keeps stanzas between two entities in order, so up to
``window`` packets may be outstanding. The first error result ends the
stream (the XEP: "the sender MUST close the bytestream").

How much of that window is used follows the acknowledged rate
(:class:`AckPacer`): the bytes in flight are capped at what the peer
acknowledged in the last :data:`PACE_HORIZON` seconds (at least one small
packet, at most the window), and packets shrink below the block size when
the cap does. On a fast path acknowledgements come within
milliseconds and the whole window is used; behind a server that shapes its
clients to a few kB/s, a full window would queue minutes of data in front
of every other stanza on the connection (stream-management acknowledgements
among them, so the server would give the stream up), and the cap keeps that
queue to about the horizon.

The receiver checks, in this order, what the XEP requires of every packet:
the next ``seq`` (anything else means loss: ``unexpected-request``, and the
stream is dead), strict base64 (characters outside the alphabet, or ``=``
before the end: ``bad-request``), and the block size (``not-acceptable``).
Flow control on receive is the adapter's: it answers a data IQ only when its
buffer has room, which stalls a windowed sender.

:func:`data_iq` writes a data packet as XML text directly: slixmpp's generic
serialiser escapes character by character and was measured as the IBB
bottleneck (``shared/research/baseline.md``), while base64 needs no escaping.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import re

from xfer.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "MIN_PACKET",
    "NS",
    "PACE_HORIZON",
    "AckPacer",
    "IBBError",
    "IBBReceiver",
    "IBBSender",
    "StreamState",
    "data_iq",
    "data_message",
    "negotiate_block_size",
]

NS = "http://jabber.org/protocol/ibb"
MAX_BLOCK_SIZE = 65535
DEFAULT_BLOCK_SIZE = 32768  # within XEP-0261's xs:short and Prosody's stanza limit
_SEQ_MOD = 1 << 16
#: The acknowledged bytes of this many seconds back may be in flight.
PACE_HORIZON = 1.5
#: The smallest packet a paced sender cuts its data into.
MIN_PACKET = 4096
#: A pacer keeps its acknowledgements in about this many slots per horizon.
_SLOTS = 16
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class IBBError(RemoteProtocolError):
    """A packet broke XEP-0047; ``condition`` is the stanza error to reply with."""

    def __init__(self, message: str, *, condition: str, etype: str = "cancel") -> None:
        super().__init__(message)
        self.condition = condition
        self.etype = etype


class StreamState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


def negotiate_block_size(offered: int, our_max: int) -> int:
    """Accept ``offered`` if it fits, else raise ``resource-constraint``.

    XEP-0047: a responder that wants smaller blocks answers the open with
    ``resource-constraint`` (type modify); the initiator may retry smaller.
    """
    if not 1 <= offered <= MAX_BLOCK_SIZE:
        raise IBBError(f"block-size {offered} is invalid", condition="bad-request")
    if offered > our_max:
        raise IBBError(
            f"block-size {offered} is above our {our_max}",
            condition="resource-constraint",
            etype="modify",
        )
    return offered


class IBBSender:
    """Sequence numbers and the window of unacknowledged data packets."""

    def __init__(self, *, block_size: int, window: int) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise LocalProtocolError("block size must be 1 to 65535")
        if window < 1:
            raise LocalProtocolError("window must be at least 1")
        self.block_size = block_size
        self.window = window
        self.state = StreamState.OPEN
        self._next_seq = 0
        self._outstanding: dict[int, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self._outstanding)

    @property
    def in_flight_bytes(self) -> int:
        return sum(self._outstanding.values())

    def can_send(self) -> bool:
        return self.state is StreamState.OPEN and len(self._outstanding) < self.window

    def send(self, size: int) -> int:
        """Account for a packet of ``size`` bytes; return its seq."""
        if self.state is not StreamState.OPEN:
            raise LocalProtocolError(f"the stream is {self.state.value}")
        if not 0 < size <= self.block_size:
            raise LocalProtocolError(f"a packet holds 1 to {self.block_size} bytes")
        if len(self._outstanding) >= self.window:
            raise LocalProtocolError("the window is full; wait for acknowledgements")
        seq = self._next_seq
        self._next_seq = (seq + 1) % _SEQ_MOD
        self._outstanding[seq] = size
        return seq

    def acked(self, seq: int) -> int:
        """A packet's IQ result arrived; return its size."""
        try:
            return self._outstanding.pop(seq)
        except KeyError:
            raise RemoteProtocolError(
                f"acknowledgement for unknown seq {seq}"
            ) from None

    def failed(self, seq: int, condition: str) -> None:
        """A packet's IQ error arrived: the stream is over."""
        self._outstanding.pop(seq, None)
        self.state = StreamState.FAILED

    def close(self) -> None:
        if self._outstanding and self.state is StreamState.OPEN:
            raise LocalProtocolError("close only once every packet is acknowledged")
        if self.state is StreamState.OPEN:
            self.state = StreamState.CLOSED


class AckPacer:
    """How many bytes a sender may have unacknowledged, and how large its
    next packet: the bytes the peer acknowledged in the last ``horizon``
    seconds, at least ``min_packet`` (a packet of :data:`MIN_PACKET` bytes,
    or the block size if smaller), at most ``window`` blocks; a packet is
    half that cap, at most the block size. Times are the caller's clock, in
    seconds (sans-I/O: nothing here reads a clock).

    A sender whose acknowledgements come in less than ``horizon`` sees
    more acknowledged per horizon than it has in flight, so the cap grows
    (doubling per round trip) up to the window of whole blocks; one whose
    acknowledgements take longer, because its data waits in a queue in
    front of a slow link, sees the cap fall to what the link carries in
    ``horizon``, and its packets shrink with it: no more than that, or
    one small packet, is ever queued in front of other stanzas.
    """

    def __init__(
        self,
        *,
        block_size: int,
        window: int,
        horizon: float = PACE_HORIZON,
        min_packet: int = MIN_PACKET,
    ) -> None:
        if block_size < 1 or window < 1 or horizon <= 0 or min_packet < 1:
            raise LocalProtocolError("pacing parameters must be positive")
        self.block_size = block_size
        self.least = min(min_packet, block_size)
        self.most = block_size * window
        self.horizon = horizon
        self._acks: collections.deque[tuple[float, int]] = collections.deque()
        self._recent = 0  # the sum of the sizes in _acks

    def acked(self, size: int, now: float) -> None:
        """The peer acknowledged a packet of ``size`` bytes at ``now``.

        Acknowledgements within :data:`_SLOTS`-th of the horizon of each
        other share one entry (dated by the first), so a flood of them,
        real or forged, keeps at most about :data:`_SLOTS` entries: memory
        stays bounded, and the cap stays at most the window whatever they
        claim."""
        acks = self._acks
        if acks and now - acks[-1][0] < self.horizon / _SLOTS:
            acks[-1] = (acks[-1][0], acks[-1][1] + size)
        else:
            acks.append((now, size))
        self._recent += size
        self._expire(now)

    def cap(self, now: float) -> int:
        """The bytes that may be in flight at ``now``."""
        self._expire(now)
        return min(max(self._recent, self.least), self.most)

    def packet(self, now: float) -> int:
        """The largest packet to send next, at ``now``: half the cap (two
        in flight keep a slow link busy while one is acknowledged, and a
        receiver sees data twice per horizon), at least the smallest
        packet, at most a block."""
        return min(max(self.cap(now) // 2, self.least), self.block_size)

    def allows(self, in_flight: int, size: int, now: float) -> bool:
        """Whether a packet of ``size`` bytes may go out with ``in_flight``
        bytes unacknowledged (always when nothing is: a stream never stops
        for want of acknowledgements it cannot get)."""
        return in_flight == 0 or in_flight + size <= self.cap(now)

    def _expire(self, now: float) -> None:
        acks, oldest = self._acks, now - self.horizon
        while acks and acks[0][0] < oldest:
            self._recent -= acks.popleft()[1]


class IBBReceiver:
    """Checks incoming data packets; returns their bytes."""

    def __init__(self, *, block_size: int) -> None:
        self.block_size = block_size
        self.state = StreamState.OPEN
        self.expected_seq = 0

    def data(self, seq: int | str, text: str) -> bytes:
        """Validate one packet (seq, base64 text) and return its payload.

        Raises:
            IBBError: with the condition to reply with; after an out-of-order
                seq the stream is FAILED and every later packet fails too.
        """
        if self.state is not StreamState.OPEN:
            raise IBBError("the stream is closed", condition="item-not-found")
        try:
            number = int(seq)
        except (TypeError, ValueError):
            number = -1
        if number != self.expected_seq:
            self.state = StreamState.FAILED
            raise IBBError(
                f"seq {seq} where {self.expected_seq} was due",
                condition="unexpected-request",
            )
        if not _B64.fullmatch(text) or len(text) % 4:
            raise IBBError("data is not valid base64", condition="bad-request")
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise IBBError(
                "data is not valid base64", condition="bad-request"
            ) from None
        if len(payload) > self.block_size:
            raise IBBError(
                f"{len(payload)} bytes exceed the block size {self.block_size}",
                condition="not-acceptable",
            )
        self.expected_seq = (self.expected_seq + 1) % _SEQ_MOD
        return payload

    def close(self) -> None:
        if self.state is StreamState.OPEN:
            self.state = StreamState.CLOSED


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


def data_iq(*, to: str, iq_id: str, sid: str, seq: int, payload: bytes) -> str:
    """The XML text of a data packet in an IQ set."""
    b64 = base64.b64encode(payload).decode("ascii")
    return (
        f"<iq type='set' to='{_attr(to)}' id='{_attr(iq_id)}'>"
        f"<data xmlns='{NS}' seq='{seq}' sid='{_attr(sid)}'>{b64}</data></iq>"
    )


def data_message(*, to: str, msg_id: str, sid: str, seq: int, payload: bytes) -> str:
    """The XML text of a data packet in a message stanza (no acknowledgement)."""
    b64 = base64.b64encode(payload).decode("ascii")
    return (
        f"<message to='{_attr(to)}' id='{_attr(msg_id)}'>"
        f"<data xmlns='{NS}' seq='{seq}' sid='{_attr(sid)}'>{b64}</data></message>"
    )
