"""Shared set-up of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no account settings, data and config in tmp_path."""
    for var in (
        "XFER_JID",
        "XFER_PASSWORD",
        "XFER_HOST",
        "XFER_PORT",
        "XFER_TLS",
        "XFER_CA_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XFER_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path
