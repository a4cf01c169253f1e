"""The deploy tests' table is written once, at the session's end."""

from __future__ import annotations

import pytest

from tests.deploy import _table


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _table.write()
