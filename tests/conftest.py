"""Shared test set-up: Hypothesis profiles and the vector loader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"

# "ci" runs more examples; neither profile has a deadline, because the machine
# is shared and a slow example is not a failure.
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# "long": a longer fuzzing run by hand, e.g. XFER_FUZZ_EXAMPLES=5000 pytest -s
# tests/property/test_parsers_fuzz.py tests/property/test_jingle_wire_fuzz.py
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("XFER_FUZZ_EXAMPLES", "0") or 0) or 1,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    "long"
    if os.environ.get("XFER_FUZZ_EXAMPLES")
    else ("ci" if os.environ.get("CI") else "dev")
)


def load_vectors(relative: str) -> list[Any]:
    """The parsed JSON list in spec/vectors/<relative>."""
    data = json.loads((VECTORS / relative).read_text())
    assert isinstance(data, list)
    return data


def vector_params(relative: str) -> list[Any]:
    """pytest params over a vector file, with ids like ``seal.json[3]``."""
    name = Path(relative).name
    return [
        pytest.param(v, id=f"{name}[{i}]") for i, v in enumerate(load_vectors(relative))
    ]


def require_or_skip(available: bool, what: str) -> None:
    """Skip a test whose external dependency is missing - but fail under CI.

    CI installs everything (scripts/bootstrap), so a missing dependency there
    is a broken set-up, never a reason to pass.
    """
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI=true; scripts/bootstrap installs it")
    pytest.skip(f"{what} is not installed")
