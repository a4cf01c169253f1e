from __future__ import annotations

import pytest

from xfer.errors import (
    AlreadyFinalized,
    EnvelopeFormatError,
    IntegrityError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UnsupportedSuite,
    UnsupportedVersion,
    XferError,
)


def test_protocol_error_is_abstract():
    with pytest.raises(TypeError):
        ProtocolError("who did it?")
    assert isinstance(LocalProtocolError("x"), ProtocolError)


def test_integrity_error_is_opaque():
    assert str(IntegrityError()) == IntegrityError.MESSAGE
    assert not isinstance(IntegrityError(), ProtocolError)


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (AlreadyFinalized, LocalProtocolError),
        (UnsupportedVersion, EnvelopeFormatError),
        (UnsupportedSuite, EnvelopeFormatError),
        (EnvelopeFormatError, RemoteProtocolError),
        (IntegrityError, XferError),
    ],
)
def test_error_tree(cls, base):
    assert issubclass(cls, base)
