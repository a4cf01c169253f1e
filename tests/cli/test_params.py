"""The param types: sizes and durations."""

from __future__ import annotations

import click
import pytest
from xfer_cli.params import DurationType, SizeType


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("500", 500),
        ("1K", 1024),
        ("2M", 2 << 20),
        ("1.5G", 3 << 29),
        ("2GiB", 2 << 30),
        ("3gb", 3 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert SizeType().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["lots", "-1M", ""])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(click.BadParameter):
        SizeType().convert(text, None, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert DurationType().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["soon", "-1h", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        DurationType().convert(text, None, None)
