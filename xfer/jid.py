"""Bare JIDs: one rule that normalises, one that only strips the resource.

A JID is ``localpart@domainpart/resourcepart``; its bare form drops the
resource. RFC 7622 compares the localpart and the domainpart without regard
to case, and the resource with it, so two texts can name the same account.

:func:`bare_jid`
    The normalising rule: the account a JID names, lower-cased and checked.
    Use it wherever a bare JID is a *key* or is compared with one: the trust
    store (a fingerprint trusted for ``Alice@Example.org`` holds for
    ``alice@example.org/phone``), OTR sessions and offers grouped per peer,
    a sender named on the command line, the JID a message shows the user.

:func:`strip_resource`
    Only drops the resource and keeps the text as it is. Use it where the
    bare JID is compared with text that an XMPP library or server produced in
    the same spelling (slixmpp's ``boundjid.bare``, a ``from`` it routed),
    where it must never raise on a peer's malformed address, or where it is
    shown exactly as given.

Both are pure: no I/O, no XMPP library.
"""

from __future__ import annotations

from xfer.errors import LocalProtocolError

__all__ = ["bare_jid", "strip_resource"]


def strip_resource(jid: str) -> str:
    """``'Alice@Example.org/phone'`` -> ``'Alice@Example.org'`` (never raises)."""
    return jid.split("/", 1)[0]


def bare_jid(jid: str) -> str:
    """``'Alice@Example.org/phone'`` -> ``'alice@example.org'``.

    Raises:
        LocalProtocolError: nothing is left, or it names neither a local part
            (no ``@``) nor a domain (no ``.``).
    """
    bare = strip_resource(jid).strip().lower()
    if not bare or ("@" not in bare and "." not in bare):
        msg = f"not a JID: {jid!r}"
        raise LocalProtocolError(msg)
    return bare
