from __future__ import annotations

import pytest

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.jingle.files import Checksum, FileDescription, Range


def test_a_plain_offer():
    f = FileDescription(
        name="a1b2c3.xfer", size=1_234_567, hashes=(("sha-256", bytes(32)),)
    )
    assert f.media_type == "application/octet-stream"
    assert f.range is None


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"name": "x" * 1025},
        {"name": "a\x00b"},
        {"size": -1},
        {"size": 1 << 63},
        {"hashes": (("md5", bytes(16)),)},
        {"hashes": (("sha-256", bytes(31)),)},
        {"media_type": "x" * 256},
        {"range": Range(offset=11)},
        {"range": Range(offset=5, length=6)},
    ],
)
def test_out_of_bounds_offers_are_remote_errors(fields):
    base = {"name": "f", "size": 10}
    with pytest.raises(RemoteProtocolError):
        FileDescription(**{**base, **fields})


def test_ranges_for_resuming():
    assert Range(offset=10).within(10)  # nothing left: still a valid request
    assert Range(offset=4, length=6).within(10)
    assert not Range(offset=4, length=7).within(10)
    with pytest.raises(RemoteProtocolError):
        Range(offset=-1)


def test_checksums_need_a_known_hash():
    Checksum(content="file", hashes=(("blake2b-256", bytes(32)),))
    with pytest.raises(LocalProtocolError):
        Checksum(content="file", hashes=())
    with pytest.raises(LocalProtocolError):
        Checksum(
            content="file", hashes=(("BLAKE2b256", bytes(32)),)
        )  # slixmpp's spelling
