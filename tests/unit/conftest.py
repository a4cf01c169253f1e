"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.otr_helpers import Pows
from xfer.otr import smp as smp_module


@pytest.fixture
def pows(monkeypatch: pytest.MonkeyPatch) -> Pows:
    """``pow`` in :mod:`xfer.otr.smp`, checked and counted."""
    counter = Pows()
    monkeypatch.setattr(smp_module, "pow", counter, raising=False)
    return counter
