"""Helpers for tests and demos: a local XMPP server (not used by the library itself)."""

from __future__ import annotations
