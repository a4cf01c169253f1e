from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_or_skip
from tests.interop.libotr import LibOTRPeer, find_libotr
from xfer.otr import PrivateKey, Session


@pytest.fixture(scope="session")
def dsa_keys() -> list[PrivateKey]:
    """A few long-term keys (DSA generation is slow enough to share them)."""
    return [PrivateKey.generate() for _ in range(3)]


@pytest.fixture
def libotr_peer(tmp_path: Path, dsa_keys: list[PrivateKey]) -> LibOTRPeer:
    require_or_skip(find_libotr() is not None, "libotr (Debian package libotr5)")
    return LibOTRPeer(
        tmp_path, account="alice@example.org", key=dsa_keys[0], instag=0x9ABCDEF0
    )


@pytest.fixture
def xfer_session(dsa_keys: list[PrivateKey]) -> Session:
    return Session(dsa_keys[1], our_tag=0x00000123)
