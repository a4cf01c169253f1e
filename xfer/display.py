"""Strings from peers and servers, made safe to show on a terminal line.

A sender chooses a file's name and media type, the question of a
verification and the text of a Jingle reason; a server chooses JIDs and
resources. Every one of them is hostile: written raw to a terminal, a carriage
return rewrites the line already shown ("NOT TRUSTED" becomes "trusted"), an
escape sequence hides text (``ESC[8m``) or moves the cursor, a line feed adds a
fake prompt, and a bidirectional override (U+202E) shows ``exe.pdf`` for
``fdp.exe``. Pure: no I/O.

:func:`shown` is the one rule. Every character that :meth:`str.isprintable`
rejects becomes a visible escape, written as Python writes it in a literal
(``\\x1b``, ``\\u202e``, ``\\U000e0001``): the C0 and C1 controls, DEL, ESC,
CR, LF and TAB (category Cc); bidi controls and isolates, zero-width and
other invisible format characters (Cf, which includes U+200E, U+200F,
U+202A-U+202E, U+2066-U+2069, U+061C); the line and paragraph separators (Zl,
Zp); spaces other than the ASCII space (Zs: U+00A0 and friends look like a
space but are not one); surrogates (Cs: a lone one cannot even be encoded for
the terminal), private-use (Co) and unassigned (Cn) code points; and the few
characters Unicode draws as nothing without calling them format characters
(:data:`INVISIBLE`: the Hangul fillers, U+034F, U+17B4, U+17B5). Printable
text, including a backslash, is left as it is: ``shown`` is the identity on a
string of :func:`printable` characters that is not too long, so a
literal ``\\x1b`` typed by the peer looks the same as an escaped ESC; either
way, nothing reaches the terminal that it would act on.

Length: a one-line field (name, media type, JID, question, reason) is capped
at :data:`FIELD_LIMIT` (200) characters *of output*, a whole message at
:data:`LINE_LIMIT` (1000), so that a peer cannot flood the screen or push a
warning out of view. What was cut is replaced by one ``…`` (U+2026), and the
cut never splits an escape.
"""

from __future__ import annotations

__all__ = [
    "ELLIPSIS",
    "FIELD_LIMIT",
    "INVISIBLE",
    "LINE_LIMIT",
    "escape_char",
    "printable",
    "shown",
]

#: The most characters :func:`shown` returns for one field of a line.
FIELD_LIMIT = 200
#: The most characters of one whole message (an error line, say).
LINE_LIMIT = 1000
#: What stands for the part of a string that was cut.
ELLIPSIS = "\u2026"
#: Printable by :meth:`str.isprintable`, yet drawn as nothing: escaped too.
INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5")


def printable(ch: str) -> bool:
    """Whether :func:`shown` keeps the character ``ch`` as it is."""
    return ch.isprintable() and ch not in INVISIBLE


def escape_char(ch: str) -> str:
    """The visible escape of one character: ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``, as in a Python string literal."""
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: str, *, limit: int | None = FIELD_LIMIT) -> str:
    """``text`` with every non-printable character escaped, at most ``limit``
    characters long (None: no limit); see the module's documentation.

    Raises:
        ValueError: ``limit`` is less than 1.
    """
    if limit is not None and limit < 1:
        raise ValueError("a limit must leave room for at least one character")
    if (
        text.isprintable()
        and INVISIBLE.isdisjoint(text)
        and (limit is None or len(text) <= limit)
    ):
        return text  # the common case: nothing to do
    pieces: list[str] = []
    length = 0
    for ch in text:
        piece = ch if printable(ch) else escape_char(ch)
        pieces.append(piece)
        length += len(piece)
    if limit is None or length <= limit:
        return "".join(pieces)
    kept: list[str] = []
    room = limit - len(ELLIPSIS)
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + ELLIPSIS
