"""Peer-supplied file names made safe to create, sans-I/O.

A sender chooses the name in its offer; the receiver must never let it pick
a different directory, a device, a hidden file or a name the file system
rejects. :func:`safe_name` keeps the last path component only, removes
control characters and characters that are special on common file systems,
refuses ``.``/``..``, prefixes Windows' reserved device names and leading
dots, and caps the length at 255 UTF-8 bytes (keeping the extension).
:func:`numbered` gives the n-th alternative for a name that is taken.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_DEPTH", "MAX_NAME_BYTES", "numbered", "safe_name", "safe_parts"]

MAX_NAME_BYTES = 255
FALLBACK = "received-file"
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{i}" for p in ("COM", "LPT") for i in "0123456789¹²³"]
)
_SPECIAL = frozenset('<>:"/\\|?*')


def _clean_char(ch: str) -> str:
    if ch in _SPECIAL:
        return "_"
    category = unicodedata.category(ch)
    # Cc control, Cf format (bidi overrides), Cs surrogate, Co private, Cn unassigned.
    if category.startswith("C") or category in ("Zl", "Zp"):
        return ""
    return ch


def _truncate(name: str, limit: int = MAX_NAME_BYTES) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    room = limit - len(ext.encode("utf-8")) - (1 if ext else 0)
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{cut}.{ext}" if ext else cut


def safe_name(name: str) -> str:
    """A single, harmless file name for the peer-supplied ``name``."""
    name = unicodedata.normalize("NFC", name)
    # Keep the last component for either separator: "../../x", "C:\\x", "/x".
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(_clean_char(ch) for ch in name).strip(" .")
    if not name:
        return FALLBACK
    base = name.split(".", 1)[0].upper().rstrip(" ")
    if base in _RESERVED:
        name = f"_{name}"
    return _truncate(name)


def numbered(name: str, n: int) -> str:
    """``report.pdf`` -> ``report (n).pdf`` (within the length limit)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f" ({n})" + (f".{ext}" if ext else "")
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore") + suffix


#: Directory levels kept from a peer-supplied relative path.
MAX_DEPTH = 32


def safe_parts(name: str) -> list[str]:
    """A peer-supplied relative path (``dir/sub/file``) as safe components.

    Every component goes through :func:`safe_name`; empty, ``.`` and ``..``
    components are dropped (so nothing climbs out of the target directory),
    and at most :data:`MAX_DEPTH` levels are kept. Never empty.
    """
    raw = name.replace("\\", "/").split("/")
    parts = [safe_name(p) for p in raw if p.strip(" .")] or [FALLBACK]
    if len(parts) > MAX_DEPTH:
        parts = parts[: MAX_DEPTH - 1] + parts[-1:]
    return parts
