"""Click parameter types of the commands: sizes (``500M``), durations (``7d``)
and streamhost addresses (``203.0.113.7:6000``)."""

from __future__ import annotations

import click

__all__ = ["AddressType", "DurationType", "SizeType"]

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class SizeType(click.ParamType[int]):
    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        number = text[: len(text) - len(unit)]
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a size like 500M or 2G", param, ctx)
        if size < 0:
            self.fail("a size cannot be negative", param, ctx)
        return size


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationType(click.ParamType[float]):
    """A duration like 90s, 30m, 12h or 7d (seconds without a unit)."""

    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in _DURATION_UNITS else "s"
        number = text[:-1] if text[-1:] in _DURATION_UNITS else text
        try:
            seconds = float(number) * _DURATION_UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a duration like 30m, 12h or 7d", param, ctx)
        if seconds < 0:
            self.fail("a duration cannot be negative", param, ctx)
        return seconds


class AddressType(click.ParamType[tuple[str, int | None]]):
    """HOST, HOST:PORT or [IPv6]:PORT: an address to offer as a candidate
    (no port: the port our streamhost listens on)."""

    name = "HOST[:PORT]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int | None]:
        if isinstance(value, tuple):
            return value  # a default, already parsed
        text = str(value).strip()
        host, port = text, ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        if not host or any(c.isspace() or c in "/@[]" for c in host):
            self.fail(f"{value!r} is not HOST, HOST:PORT or [IPv6]:PORT", param, ctx)
        if not port:
            return host, None
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{port!r} is not a TCP port", param, ctx)
        return host, int(port)
