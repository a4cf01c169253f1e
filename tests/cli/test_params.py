"""The param types: sizes, durations and streamhost addresses."""

from __future__ import annotations

import click
import pytest
from xfer_cli.params import AddressType, DurationType, SizeType


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


def test_durations() -> None:
    duration = DurationType()
    texts = ("0", "90", "90s", "30m", "12h", "7d")
    got = [duration.convert(text, None, None) for text in texts]
    assert got == [0.0, 90.0, 90.0, 1800.0, 43200.0, 604800.0]
    for bad in ("soon", "-1h", ""):
        with pytest.raises(click.BadParameter):
            duration.convert(bad, None, None)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", ("203.0.113.7", None)),
        ("203.0.113.7:6000", ("203.0.113.7", 6000)),
        ("home.example.org:1", ("home.example.org", 1)),
        ("[2001:db8::7]:6000", ("2001:db8::7", 6000)),
        ("[2001:db8::7]", ("2001:db8::7", None)),
        ("2001:db8::7", ("2001:db8::7", None)),
    ],
)
def test_addresses(text: str, address: tuple[str, int | None]) -> None:
    assert AddressType().convert(text, None, None) == address


@pytest.mark.parametrize(
    "text",
    ["", ":6000", "host:0", "host:65536", "host:http", "a b", "user@host", "[::1]x"],
)
def test_not_addresses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        AddressType().convert(text, None, None)
