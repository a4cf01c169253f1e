from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.framing.ibb import (
    MIN_PACKET,
    NS,
    AckPacer,
    IBBError,
    IBBReceiver,
    IBBSender,
    StreamState,
    data_iq,
    data_message,
    negotiate_block_size,
)


def test_sender_window_and_seq_wrap():
    s = IBBSender(block_size=10, window=3)
    assert [s.send(5) for _ in range(3)] == [0, 1, 2]
    assert not s.can_send()
    with pytest.raises(LocalProtocolError, match="window"):
        s.send(1)
    assert s.acked(1) == 5
    assert s.can_send()
    s._next_seq = 65535
    assert s.send(1) == 65535
    s.acked(0)
    assert s.send(1) == 0  # wrapped
    with pytest.raises(RemoteProtocolError):
        s.acked(1234)
    with pytest.raises(LocalProtocolError):
        s.send(11)


def test_sender_closes_only_when_everything_is_acknowledged():
    s = IBBSender(block_size=10, window=2)
    seq = s.send(3)
    with pytest.raises(LocalProtocolError):
        s.close()
    s.acked(seq)
    s.close()
    assert s.state is StreamState.CLOSED
    with pytest.raises(LocalProtocolError):
        s.send(1)


def test_an_error_result_fails_the_sender():
    s = IBBSender(block_size=10, window=2)
    s.failed(s.send(3), "not-acceptable")
    assert s.state is StreamState.FAILED
    assert not s.can_send()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_receiver_in_order_and_wrapping():
    r = IBBReceiver(block_size=4)
    assert r.data("0", b64(b"abcd")) == b"abcd"
    r.expected_seq = 65535
    assert r.data(65535, b64(b"x")) == b"x"
    assert r.expected_seq == 0
    assert r.data(0, "") == b""


@pytest.mark.parametrize(
    ("seq", "text", "condition"),
    [
        (1, b64(b"a"), "unexpected-request"),  # a gap: loss
        ("x", b64(b"a"), "unexpected-request"),
        (0, "YW=J", "bad-request"),  # '=' before the end
        (0, "YW Jj", "bad-request"),  # whitespace inside
        (0, "YWJ", "bad-request"),  # not a multiple of 4
        (0, "Y*Jj", "bad-request"),
        (0, b64(b"abcde"), "not-acceptable"),  # over the block size
    ],
)
def test_receiver_errors_follow_the_xep(seq, text, condition):
    r = IBBReceiver(block_size=4)
    with pytest.raises(IBBError) as info:
        r.data(seq, text)
    assert info.value.condition == condition


def test_after_a_gap_the_stream_is_dead():
    r = IBBReceiver(block_size=4)
    with pytest.raises(IBBError):
        r.data(5, b64(b"a"))
    with pytest.raises(IBBError, match="closed"):
        r.data(0, b64(b"a"))


def test_block_size_negotiation():
    assert negotiate_block_size(4096, 65535) == 4096
    with pytest.raises(IBBError) as info:
        negotiate_block_size(65535, 8192)
    assert (info.value.condition, info.value.etype) == ("resource-constraint", "modify")
    for bad in (0, 65536):
        with pytest.raises(IBBError):
            negotiate_block_size(bad, 65535)


@given(
    payload=st.binary(max_size=300),
    seq=st.integers(0, 65535),
    to=st.text(min_size=1, max_size=30),
    sid=st.text(min_size=1, max_size=20),
)
def test_raw_stanzas_are_well_formed_xml(payload, seq, to, sid):
    to = "".join(c for c in to if c.isprintable()) or "x"
    sid = "".join(c for c in sid if c.isprintable()) or "s"
    for text, tag in (
        (data_iq(to=to, iq_id="i<'\"&", sid=sid, seq=seq, payload=payload), "iq"),
        (data_message(to=to, msg_id="m", sid=sid, seq=seq, payload=payload), "message"),
    ):
        root = ET.fromstring(text)
        assert root.tag == tag
        assert root.get("to") == to
        data = root.find(f"{{{NS}}}data")
        assert data.get("sid") == sid
        assert data.get("seq") == str(seq)
        assert base64.b64decode(data.text or "") == payload


# -- pacing by the acknowledged rate -------------------------------------------

BLOCK = 32768


def test_a_pacer_starts_with_one_small_packet() -> None:
    p = AckPacer(block_size=BLOCK, window=8, horizon=1.5)
    assert p.cap(0.0) == p.packet(0.0) == MIN_PACKET
    assert AckPacer(block_size=100, window=8).packet(0.0) == 100  # smaller blocks
    # Nothing in flight: a packet always goes, whatever the cap.
    assert p.allows(0, BLOCK, 0.0)
    assert not p.allows(1, MIN_PACKET, 0.0)


def test_the_cap_is_what_was_acknowledged_within_the_horizon() -> None:
    p = AckPacer(block_size=BLOCK, window=8, horizon=1.5)
    p.acked(20000, 10.0)
    p.acked(30000, 10.5)
    assert p.cap(10.5) == 50000
    assert p.packet(10.5) == 25000  # half the cap: two in flight
    assert p.allows(20000, 30000, 10.5)
    assert not p.allows(20001, 30000, 10.5)
    # The first acknowledgement leaves the horizon, then the second.
    assert p.cap(11.6) == 30000
    assert p.packet(11.6) == 15000
    assert p.cap(12.1) == MIN_PACKET


def test_the_cap_never_exceeds_the_window() -> None:
    p = AckPacer(block_size=BLOCK, window=8, horizon=1.5)
    for i in range(100):
        p.acked(BLOCK, i * 0.001)
    assert p.cap(0.1) == 8 * BLOCK
    assert p.packet(0.1) == BLOCK  # never above the block size


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_size": 0, "window": 8},
        {"block_size": 10, "window": 0},
        {"block_size": 10, "window": 8, "horizon": 0},
        {"block_size": 10, "window": 8, "min_packet": 0},
    ],
)
def test_pacer_parameters_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        AckPacer(**kwargs)


def simulate(
    rate: float, rtt: float, seconds: float, *, horizon: float = 1.5
) -> tuple[float, float, int]:
    """A sender with always more to send, paced by :class:`AckPacer` and an
    8-packet window, over a link that carries ``rate`` bytes/s (first in,
    first out) with ``rtt`` of latency besides; returns the bytes/s
    delivered, the longest time a packet waited in the link's queue before
    its turn, and the largest cap seen."""
    pacer = AckPacer(block_size=BLOCK, window=8, horizon=horizon)
    sender = IBBSender(block_size=BLOCK, window=8)
    now = 0.0
    link_free = 0.0  # when the link has sent everything queued so far
    acks: list[tuple[float, int, int]] = []  # (when, seq, size)
    delivered = 0
    longest_wait = 0.0
    largest_cap = 0
    while now < seconds:
        while True:
            size = pacer.packet(now)
            if not (
                sender.can_send() and pacer.allows(sender.in_flight_bytes, size, now)
            ):
                break
            seq = sender.send(size)
            start = max(now, link_free)
            longest_wait = max(longest_wait, start - now)
            link_free = start + size / rate
            acks.append((link_free + rtt, seq, size))
        largest_cap = max(largest_cap, pacer.cap(now))
        acks.sort()
        when, seq, size = acks.pop(0)
        now = when
        sender.acked(seq)
        pacer.acked(size, now)
        delivered += size
    return delivered / now, longest_wait, largest_cap


@pytest.mark.parametrize("rate", [2400.0, 16000.0, 60000.0])
def test_a_slow_link_queues_no_more_than_about_the_horizon(rate: float) -> None:
    got, waited, _ = simulate(rate, rtt=0.05, seconds=300)
    # The link stays busy (nearly all of its rate is used) ...
    assert got > 0.8 * rate
    # ... yet nothing waits behind more than the horizon and one packet
    # (a full window of 256 KiB would wait minutes at these rates).
    assert waited < 1.5 + BLOCK / rate
    assert waited < 8 * BLOCK / rate / 2


def test_a_fast_link_uses_the_whole_window() -> None:
    got, _, cap = simulate(50e6, rtt=0.002, seconds=2)
    assert cap == 8 * BLOCK
    # Window-limited: 8 blocks per round trip (plus their time on the link).
    assert got > 0.8 * (8 * BLOCK) / (0.002 + 8 * BLOCK / 50e6)


def test_a_flood_of_acknowledgements_keeps_the_pacer_small_and_bounded() -> None:
    """Acknowledgements without end (a server forging them for packets it
    dropped, each claiming a whole block, at once or spread out): the cap
    stays the window, and the pacer keeps a few entries per horizon."""
    p = AckPacer(block_size=BLOCK, window=8, horizon=1.5)
    for i in range(100_000):
        p.acked(BLOCK, 5.0 + i * 1e-5)  # a second's worth
        assert p.cap(5.0 + i * 1e-5) <= 8 * BLOCK
    assert len(p._acks) <= 17
    assert p.cap(6.0) == 8 * BLOCK
    # Once they stop, the cap falls back to one small packet.
    assert p.cap(8.0) == MIN_PACKET
    assert not p._acks


def test_acknowledgements_close_together_share_an_entry_and_expire_with_it() -> None:
    p = AckPacer(block_size=BLOCK, window=8, horizon=1.6)  # slots of 0.1 s
    p.acked(10000, 10.0)
    p.acked(20000, 10.05)  # the same slot: dated 10.0
    p.acked(40000, 10.2)
    assert p.cap(10.2) == 70000
    assert p.cap(11.65) == 40000  # the first slot left the horizon, whole
    assert p.cap(11.85) == MIN_PACKET
