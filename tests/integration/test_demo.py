"""The README's main job, ``xfer demo``, as a new user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import require_or_skip
from xfer.testing.prosody import prosody_available

pytestmark = pytest.mark.integration


def test_xfer_demo_runs_a_verified_transfer() -> None:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    done = subprocess.run(
        [sys.executable, "-m", "xfer_cli", "demo", "--size", "3M"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("OTR fingerprint:") == 2
    assert "transport: socks5-direct" in out
    assert "SHA-256 verified" in out
    assert "(identical)" in out
    assert "removed the accounts, keys and files" in out
