"""Peer-supplied file names are neutralised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.names import FALLBACK, MAX_NAME_BYTES, numbered, safe_name


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("..", FALLBACK),
        ("", FALLBACK),
        (" . ", FALLBACK),
        ("a\x00b\x07c\nd", "abcd"),
        ("\u202etxt.exe", "txt.exe"),
        ("CON", "_CON"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("COM1", "_COM1"),
        (".bashrc", "bashrc"),
        ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
        ("report.pdf", "report.pdf"),
        ("Ünïcödé ✓.txt", "Ünïcödé ✓.txt"),
    ],
)
def test_hostile_names(hostile: str, safe: str) -> None:
    assert safe_name(hostile) == safe


def test_long_names_keep_their_extension() -> None:
    name = safe_name("é" * 300 + ".tar")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.endswith(".tar")


@given(st.text())
def test_any_name_becomes_one_plain_component(name: str) -> None:
    safe = safe_name(name)
    assert safe
    assert "/" not in safe
    assert "\\" not in safe
    assert safe not in (".", "..")
    assert not safe.startswith(".")
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    assert all(ord(ch) >= 32 for ch in safe)


def test_numbered() -> None:
    assert numbered("report.pdf", 2) == "report (2).pdf"
    assert numbered("README", 3) == "README (3)"
    assert len(numbered("x" * 255, 12).encode()) <= MAX_NAME_BYTES
