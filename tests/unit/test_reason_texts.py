"""What the servers may read of a failure: Jingle reason texts are fixed
phrases; the details (which can tell how much of a file arrived, or a local
path) go to the peer inside OTR only."""

from __future__ import annotations

import errno
import re

import pytest

from xfer.errors import (
    ConnectionFailed,
    IntegrityError,
    NotSecure,
    NoUsableTransport,
    RemoteProtocolError,
    StreamTruncated,
    TransferTimeout,
    UntrustedPeer,
)
from xfer.xmpp.transfer import _private_text, _public_text

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
    text = _public_text(exc, receiving=receiving)
    if text is None:
        return
    assert not re.search(r"\d", text), text
    assert "/" not in text, text
    assert "@" not in text, text


def test_private_texts_keep_the_detail_but_no_path() -> None:
    assert "1234567" in _private_text(FAILURES[0])
    disk = _private_text(FAILURES[-1])
    assert "No space left on device" in disk
    assert "/home" not in disk
