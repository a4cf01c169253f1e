"""xfer.store: the identity directory is 0700 and its files 0600 on every use,
not only when the store creates them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from xfer.errors import LocalProtocolError
from xfer.otr.trust import TrustStore
from xfer.store import IdentityStore


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_a_new_directory_and_files_are_private(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "id")
    store.private_key()
    store.save_trust_store(TrustStore())
    assert _mode(store.directory) == 0o700
    for path in (store.key_path, store.trust_path):
        assert _mode(path) == 0o600


@pytest.mark.parametrize(
    "use",
    [
        lambda s: s.private_key(),
        lambda s: s.private_key(create=False),
        lambda s: s.trust_store(),
        lambda s: s.save_trust_store(TrustStore()),
    ],
    ids=["private_key", "existing_key", "trust_store", "save_trust"],
)
def test_an_existing_loose_directory_is_tightened_on_every_use(
    tmp_path: Path, use: Callable[[IdentityStore], object]
) -> None:
    directory = tmp_path / "id"
    IdentityStore(directory).private_key()
    first = IdentityStore(directory)
    first.save_trust_store(TrustStore())
    # An old version, a restored backup, a careless chmod: all readable.
    directory.chmod(0o755)
    for name in ("otr.key", "trust.json"):
        (directory / name).chmod(0o644)
    store = IdentityStore(directory)
    use(store)
    assert _mode(directory) == 0o700
    assert _mode(store.key_path) == 0o600
    assert _mode(store.trust_path) == 0o600


def test_an_existing_empty_world_writable_directory_is_tightened(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "id"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    IdentityStore(directory).private_key()
    assert _mode(directory) == 0o700


def test_tightening_keeps_a_stricter_mode_and_a_missing_directory(
    tmp_path: Path,
) -> None:
    IdentityStore(tmp_path / "nothing").tighten()  # nothing to do, no error
    assert not (tmp_path / "nothing").exists()
    directory = tmp_path / "id"
    store = IdentityStore(directory)
    store.private_key()
    directory.chmod(0o500)  # stricter than 0700: left alone
    try:
        store.trust_store()
        assert _mode(directory) == 0o500
    finally:
        directory.chmod(0o700)


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("not a directory")
    with pytest.raises(LocalProtocolError, match="not a directory"):
        IdentityStore(tmp_path / "id").trust_store()


def test_a_loose_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "id"
    directory.mkdir()
    directory.chmod(0o755)
    monkeypatch.setattr(os, "getuid", lambda: directory.stat().st_uid + 1)
    with pytest.raises(LocalProtocolError, match="another user"):
        IdentityStore(directory).trust_store()
    assert _mode(directory) == 0o755
