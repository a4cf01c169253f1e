"""Subcommands; each module is imported only when its command runs."""

from __future__ import annotations
