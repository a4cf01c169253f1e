"""What the servers may read of a failure: Jingle reason texts are fixed
phrases; the details (which can tell how much of a file arrived, or a local
path) go to the peer inside OTR only."""

from __future__ import annotations

import asyncio
import errno
import re
import xml.etree.ElementTree as ET

import pytest

from xfer.errors import (
    ConnectionFailed,
    IntegrityError,
    NotSecure,
    NoUsableTransport,
    RemoteProtocolError,
    StreamTruncated,
    TransferRejected,
    TransferTimeout,
    UntrustedPeer,
)
from xfer.jingle import Reason
from xfer.jingle.wire import Jingle, parse
from xfer.transfer.policy import (
    broke_off,
    private_text,
    public_text,
    range_offset,
    reason_for,
)

FAILURES: list[BaseException] = [
    StreamTruncated("stream cut after 1234567 verified bytes of 9999999"),
    IntegrityError(),
    ConnectionFailed("connection to 10.1.2.3:7777 reset after 55 MB"),
    NoUsableTransport("tried 3 candidates"),
    TransferTimeout("no data for 60 s at byte 424242"),
    RemoteProtocolError("bad range offset=31337"),
    NotSecure("bob@example.org/phone went away"),
    UntrustedPeer("bob@example.org/phone", bytes(20)),
    OSError(errno.ENOSPC, "No space left on device", "/home/bob/Downloads/x.pdf"),
]


@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("receiving", [True, False])
def test_public_texts_carry_no_numbers_names_or_paths(
    exc: BaseException, receiving: bool
) -> None:
    text = public_text(exc, receiving=receiving)
    if text is None:
        return
    assert not re.search(r"\d", text), text
    assert "/" not in text, text
    assert "@" not in text, text


def test_private_texts_keep_the_detail_but_no_path() -> None:
    assert "1234567" in private_text(FAILURES[0])
    disk = private_text(FAILURES[-1])
    assert "No space left on device" in disk
    assert "/home" not in disk


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (IntegrityError(), Reason.SECURITY_ERROR),
        (UntrustedPeer("b@x/y", bytes(20)), Reason.SECURITY_ERROR),
        (NotSecure("gone"), Reason.SECURITY_ERROR),
        (TransferTimeout("slow"), Reason.TIMEOUT),
        (NoUsableTransport("none"), Reason.CONNECTIVITY_ERROR),
        (StreamTruncated("cut"), Reason.FAILED_TRANSPORT),
        (ConnectionFailed("reset"), Reason.FAILED_TRANSPORT),
        (RemoteProtocolError("bad"), Reason.GENERAL_ERROR),
        (OSError(errno.EACCES, "denied"), Reason.MEDIA_ERROR),
        (KeyboardInterrupt(), Reason.CANCEL),
        (asyncio.CancelledError(), Reason.CANCEL),
        (ValueError("a bug"), Reason.GENERAL_ERROR),
    ],
    ids=lambda v: type(v).__name__,
)
def test_each_failure_has_its_jingle_reason(exc: BaseException, reason: Reason) -> None:
    assert reason_for(exc) is reason


@pytest.mark.parametrize(
    ("exc", "resumable"),
    [
        (StreamTruncated("cut"), True),
        (ConnectionFailed("reset"), True),
        (TransferTimeout("stalled"), True),
        (TransferRejected("x", reason=Reason.FAILED_TRANSPORT.value), True),
        (TransferRejected("x", reason=Reason.TIMEOUT.value), True),
        (TransferRejected("x", reason=Reason.SECURITY_ERROR.value), False),
        (TransferRejected("x", reason=Reason.DECLINE.value), False),
        (IntegrityError(), False),
        (None, False),
    ],
    ids=lambda v: type(v).__name__,
)
def test_only_breaks_of_the_transport_resume(
    exc: BaseException | None, resumable: bool
) -> None:
    assert broke_off(exc) is resumable


def _accept(range_xml: str) -> Jingle:
    return parse(
        ET.fromstring(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s1'"
            " responder='b@x/y'><content creator='initiator' name='file'"
            " senders='initiator'><description"
            " xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a</name>"
            f"<size>10</size>{range_xml}</file></description>"
            "<transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='t1'"
            " block-size='4096'/></content></jingle>"
        )
    )


@pytest.mark.parametrize(
    ("range_xml", "offset"),
    [
        ("", 0),
        ("<range/>", 0),
        ("<range offset='4'/>", 4),
        ("<range offset='10'/>", 10),
    ],
)
def test_the_receiver_may_ask_for_the_rest(range_xml: str, offset: int) -> None:
    assert range_offset(_accept(range_xml), 10) == offset


@pytest.mark.parametrize(
    "range_xml", ["<range offset='11'/>", "<range offset='2' length='3'/>"]
)
def test_a_range_xfer_does_not_send_is_refused(range_xml: str) -> None:
    with pytest.raises(RemoteProtocolError):
        range_offset(_accept(range_xml), 10)
