"""xfer.display.shown: peer-supplied strings made safe for a terminal line."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from xfer.display import (
    ELLIPSIS,
    FIELD_LIMIT,
    INVISIBLE,
    LINE_LIMIT,
    escape_char,
    printable,
    shown,
)

#: What must never reach a terminal raw.
_FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
_BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"


def _harmless(text: str) -> bool:
    return all(
        unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES
        and (ch == " " or unicodedata.category(ch) != "Zs")
        and ch not in INVISIBLE
        for ch in text
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("\x00", "\\x00"),
        ("\x07", "\\x07"),
        ("\t", "\\x09"),
        ("\n", "\\x0a"),
        ("\r", "\\x0d"),
        ("\x1b", "\\x1b"),
        ("\x1f", "\\x1f"),
        ("\x7f", "\\x7f"),
        ("\x80", "\\x80"),
        ("\x9b", "\\x9b"),  # C1 CSI: an escape sequence in one byte
        ("\x9f", "\\x9f"),
        ("\xa0", "\\xa0"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
        ("\u200b", "\\u200b"),
        ("\u2060", "\\u2060"),
        ("\ufeff", "\\ufeff"),
        ("\u3164", "\\u3164"),
        ("\ud800", "\\ud800"),
        ("\U000e0001", "\\U000e0001"),
        ("\U0010ffff", "\\U0010ffff"),
    ],
)
def test_each_class_of_dangerous_character_becomes_a_visible_escape(
    raw: str, escaped: str
) -> None:
    assert shown(f"a{raw}b") == f"a{escaped}b"


@pytest.mark.parametrize("ch", list(_BIDI))
def test_bidi_controls_and_isolates_are_escaped(ch: str) -> None:
    assert shown(f"fdp{ch}.exe") == f"fdp\\u{ord(ch):04x}.exe"


def test_the_attacks_of_the_review() -> None:
    line = shown("text/plain\r  fingerprint X: trusted\x1b[8m NOT TRUSTED\nAccept?")
    assert line == (
        "text/plain\\x0d  fingerprint X: trusted\\x1b[8m NOT TRUSTED\\x0aAccept?"
    )
    assert shown("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"


@pytest.mark.parametrize(
    "text",
    ["report.pdf", "photos/2024/a b.jpg", "C:\\x1b.txt", "Ünïcödé 写真 🎉.png", ""],
)
def test_printable_text_is_left_alone(text: str) -> None:
    assert shown(text) == text


def test_long_strings_are_capped_with_an_ellipsis() -> None:
    assert shown("x" * FIELD_LIMIT) == "x" * FIELD_LIMIT
    capped = shown("x" * (FIELD_LIMIT + 1))
    assert capped == "x" * (FIELD_LIMIT - 1) + ELLIPSIS
    assert len(shown("y" * 10_000, limit=LINE_LIMIT)) == LINE_LIMIT
    assert shown("z" * 10_000, limit=None) == "z" * 10_000
    assert shown("abcdef", limit=4) == "abc" + ELLIPSIS


def test_a_cut_never_splits_an_escape() -> None:
    capped = shown("\x1b" * 100, limit=10)
    assert capped == "\\x1b\\x1b" + ELLIPSIS
    assert shown("ab\u202e", limit=7) == "ab" + ELLIPSIS


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        shown("x", limit=0)


def test_escape_char_widths() -> None:
    assert escape_char("\x1b") == "\\x1b"
    assert escape_char("\u202e") == "\\u202e"
    assert escape_char("\U000e007f") == "\\U000e007f"


@given(st.text(), st.one_of(st.none(), st.integers(1, 300)))
def test_output_never_holds_a_control_bidi_or_format_character(
    text: str, limit: int | None
) -> None:
    out = shown(text, limit=limit)
    assert _harmless(out)
    assert not any(ch in out for ch in _BIDI + "\r\n\t\x1b\x7f")
    if limit is not None:
        assert len(out) <= limit
    assert shown(out, limit=None) == out  # already safe: unchanged


@given(st.text(st.characters(codec="utf-8").filter(printable), max_size=FIELD_LIMIT))
def test_identity_on_printable_text(text: str) -> None:
    assert shown(text) == text
    assert shown(text, limit=None) == text


@given(st.text(max_size=50))
def test_nothing_is_lost_without_a_limit(text: str) -> None:
    # Every escape reads back as the character it stands for (a backslash of
    # the peer's own is kept as it is, so only text without one reads back).
    assume("\\" not in text)
    out = shown(text, limit=None)
    assert out.encode("ascii", "backslashreplace").decode("unicode_escape") == text
