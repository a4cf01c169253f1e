"""Paths in shared folders (spec/share.md section 3), sans-I/O: what a
request may name and a listing may hold, checked the same way on both sides.
"""

from __future__ import annotations

import unicodedata

from xfer.errors import LocalProtocolError

__all__ = ["MAX_DEPTH", "MAX_PATH_BYTES", "check_path", "path_key", "within"]

#: A path (request, entry, file) is at most this many UTF-8 bytes, and has
#: at most :data:`MAX_DEPTH` components.
MAX_PATH_BYTES = 1024
MAX_DEPTH = 32


def _bad_char(ch: str) -> bool:
    # Cc control, Cf format (bidi overrides, zero-width), Cs surrogates, Co
    # private use, Cn unassigned; line and paragraph separators.
    category = unicodedata.category(ch)
    return category.startswith("C") or category in ("Zl", "Zp")


def check_path(path: str, *, root: bool = False) -> tuple[str, ...]:
    """The components of a share path, or LocalProtocolError.

    A share path is relative to the shared directory: components joined by
    ``/``, none empty (no leading, trailing or doubled ``/``), none ``.`` or
    ``..`` or starting with ``.`` (hidden), none holding a backslash, NUL,
    control or format character, none that Unicode compatibility folding
    (NFKC) turns into ``.``/``..`` or gives a ``/`` or ``\\``; at most
    :data:`MAX_PATH_BYTES` UTF-8 bytes and :data:`MAX_DEPTH` components.
    The empty path names the shared directory itself, where ``root`` allows.
    """
    if path == "":
        if root:
            return ()
        raise LocalProtocolError("an empty path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise LocalProtocolError("a path is at most 1024 UTF-8 bytes")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise LocalProtocolError("a path has at most 32 components")
    for part in parts:
        if not part:
            raise LocalProtocolError("a path has no empty component (no '/' at ends)")
        folded = unicodedata.normalize("NFKC", part)
        if part.startswith(".") or folded.startswith("."):
            raise LocalProtocolError("a path has no '.', '..' or hidden component")
        if "\\" in part or "\\" in folded or "/" in folded:
            raise LocalProtocolError("a path has no backslash")
        if any(_bad_char(ch) for ch in part):
            raise LocalProtocolError("a path has no control or format characters")
    return parts


def path_key(path: str) -> bytes:
    """The order of a listing: the bytes of the path in UTF-8."""
    return path.encode("utf-8")


def within(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or under it (``top`` "" is the root)."""
    return top in ("", path) or path.startswith(top + "/")
