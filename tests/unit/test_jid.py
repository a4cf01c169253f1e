"""Bare JIDs: the normalising rule and the one that only strips the resource."""

from __future__ import annotations

import pytest

from xfer.errors import LocalProtocolError
from xfer.jid import bare_jid, strip_resource
from xfer.otr import trust


@pytest.mark.parametrize(
    ("jid", "bare"),
    [
        ("a@b/c", "a@b"),
        ("Alice@Example.org/Phone", "alice@example.org"),
        (" alice@example.org ", "alice@example.org"),
        ("example.org/r/with/slashes", "example.org"),
    ],
)
def test_bare_jid_normalises(jid: str, bare: str):
    assert bare_jid(jid) == bare


@pytest.mark.parametrize("jid", ["", "/res", "   ", "localhost", "nobody/x"])
def test_bare_jid_refuses_what_names_no_account(jid: str):
    with pytest.raises(LocalProtocolError, match="not a JID"):
        bare_jid(jid)


@pytest.mark.parametrize(
    ("jid", "bare"),
    [
        ("Alice@Example.org/Phone", "Alice@Example.org"),
        ("a@b/c/d", "a@b"),
        ("localhost", "localhost"),
        ("", ""),
    ],
)
def test_strip_resource_keeps_the_text(jid: str, bare: str):
    assert strip_resource(jid) == bare


def test_the_trust_store_keys_by_the_same_rule():
    assert trust.bare_jid is bare_jid
