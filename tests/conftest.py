"""Shared test set-up: Hypothesis profiles, the long profile (tests marked
``long`` run only when asked for) and the vector loader."""

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


# -- tests that share the machine's state ----------------------------------------
#
# scripts/test runs the suite in several processes (pytest-xdist, --dist
# loadgroup). Tests that change or inspect what the whole machine has (network
# namespaces and firewall rules, ejabberd's Erlang port mapper, checks that
# nothing of theirs is left running) run one after the other in one process.

SYSTEM_WIDE = ("tests/deploy/", "tests/integration/test_ejabberd.py")


def _group_system_wide(items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.path)).relative_to(ROOT).as_posix()
        if where.startswith(SYSTEM_WIDE):
            item.add_marker(pytest.mark.xdist_group("system"))


# -- the long profile ------------------------------------------------------------
#
# Tests marked ``long`` are longer runs of what a shorter test in the default
# run already proves (fifty cut transfers where twelve run by default, 100 MiB
# files where the default run sends every chunk-boundary size). The default
# run deselects them, and says so in its summary; ``XFER_PROFILE=long`` runs
# everything, ``-m long`` only them.

LONG_PROFILE = os.environ.get("XFER_PROFILE", "") == "long"
_deselected_long: list[pytest.Item] = []


def _selects_long(config: pytest.Config) -> bool:
    """Whether ``-m`` names the ``long`` marker (``-m long``, ``-m "long or
    faults"``, ...): then the expression decides, not the default."""
    expression = str(config.getoption("markexpr", "") or "")
    return "long" in expression.replace("(", " ").replace(")", " ").split()


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    _group_system_wide(items)
    if LONG_PROFILE or _selects_long(config):
        return
    keep: list[pytest.Item] = []
    long: list[pytest.Item] = []
    for item in items:
        (keep if item.get_closest_marker("long") is None else long).append(item)
    if not long:
        return
    _deselected_long[:] = long
    config.hook.pytest_deselected(items=_deselected_long)
    items[:] = keep


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _deselected_long:
        terminalreporter.write_line(
            f"{len(_deselected_long)} long tests deselected "
            "(XFER_PROFILE=long runs them)",
            yellow=True,
        )
    elif (
        getattr(config.option, "numprocesses", None)
        and not LONG_PROFILE
        and not _selects_long(config)
    ):
        # Under xdist the workers collect (and deselect); this process saw
        # neither, but the rule is the same.
        terminalreporter.write_line(
            "tests marked long were deselected (XFER_PROFILE=long runs them)",
            yellow=True,
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
