from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.framing.ibb import (
    NS,
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
