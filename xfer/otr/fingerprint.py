"""Fingerprints as people read them.

A fingerprint is the 20-byte SHA-1 of a long-term DSA public key (see
:attr:`xfer.otr.crypto.PublicKey.fingerprint`). People compare it as 40
upper-case hex digits in five groups of eight, as pidgin-otr shows it.
"""

from __future__ import annotations

import re

from xfer.errors import LocalProtocolError

__all__ = ["format_fingerprint", "parse_fingerprint"]

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


def format_fingerprint(fingerprint: bytes) -> str:
    """``'D8FBC9F1 B027D198 97840E68 F93D0CE3 B2DEFA52'``."""
    if len(fingerprint) != 20:
        raise LocalProtocolError("a fingerprint is 20 bytes")
    text = fingerprint.hex().upper()
    return " ".join(text[i : i + 8] for i in range(0, 40, 8))


def parse_fingerprint(text: str) -> bytes:
    """Accept 40 hex digits, in any case, with any spaces or colons.

    Raises:
        LocalProtocolError: it is not a fingerprint.
    """
    compact = re.sub(r"[\s:]", "", text)
    if not _HEX40.fullmatch(compact):
        msg = f"not a fingerprint (40 hex digits): {text!r}"
        raise LocalProtocolError(msg)
    return bytes.fromhex(compact)
