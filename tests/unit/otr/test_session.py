"""A session and what the peer offers in the clear: whitespace tags, query
messages, and the first messages of older protocol versions.

xfer speaks version 3 only (spec/otr.md section 1): an offer of version 3
starts the AKE, an offer of other versions only is reported
(``VersionUnsupported``) and changes nothing, least of all an ENCRYPTED
session.
"""

from __future__ import annotations

import base64

import pytest

from tests.otr_helpers import relay, secure_pair
from xfer.otr import MessageState, Policy, PrivateKey, Session
from xfer.otr import events as ev
from xfer.otr.data import encode_data
from xfer.otr.messages import (
    WHITESPACE_BASE,
    WHITESPACE_V2,
    WHITESPACE_V3,
    DHCommit,
    parse_encoded,
)

V1_TAG = "\x20\x09\x20\x09\x20\x20\x09\x20"


@pytest.fixture(scope="module")
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


def v2_commit() -> str:
    """A version 2 D-H Commit, as a v2-only libotr sends it (no instance tags)."""
    raw = b"\x00\x02\x02" + encode_data(b"g" * 192) + encode_data(b"h" * 32)
    return "?OTR:" + base64.b64encode(raw).decode() + "."


def fresh(keys: tuple[PrivateKey, PrivateKey], **policy: bool) -> Session:
    return Session(keys[1], our_tag=0x2222, policy=Policy(**policy))


def test_a_whitespace_tag_offering_v3_starts_the_ake(keys) -> None:
    bob = fresh(keys)
    body = "hello" + WHITESPACE_BASE + WHITESPACE_V2 + WHITESPACE_V3
    assert bob.receive(body) == [ev.PlaintextReceived(text="hello", offered_otr=True)]
    (commit,) = bob.data_to_send()
    assert isinstance(parse_encoded(commit), DHCommit)
    # The AKE it started finishes like any other.
    alice = Session(keys[0], our_tag=0x1111)
    alice.receive(commit)
    relay(alice, bob)
    assert alice.state is bob.state is MessageState.ENCRYPTED


def test_a_bare_whitespace_tag_is_not_reported_as_text(keys) -> None:
    bob = fresh(keys)
    assert bob.receive(WHITESPACE_BASE + WHITESPACE_V3) == []
    assert len(bob.data_to_send()) == 1


def test_the_policy_can_leave_whitespace_tags_unanswered(keys) -> None:
    bob = fresh(keys, whitespace_start_ake=False)
    events = bob.receive("hi" + WHITESPACE_BASE + WHITESPACE_V3)
    assert events == [ev.PlaintextReceived(text="hi", offered_otr=True)]
    assert bob.data_to_send() == []
    # A query still is answered: that policy is another one.
    bob.receive("?OTRv3?")
    assert len(bob.data_to_send()) == 1


@pytest.mark.parametrize(
    ("body", "text", "versions"),
    [
        ("hi" + WHITESPACE_BASE + WHITESPACE_V2, "hi", {2}),
        ("hi" + WHITESPACE_BASE + V1_TAG + WHITESPACE_V2, "hi", {1, 2}),
        (WHITESPACE_BASE + WHITESPACE_V2, "", {2}),
    ],
)
def test_a_whitespace_tag_without_v3_is_reported_and_starts_nothing(
    keys, body, text, versions
) -> None:
    bob = fresh(keys)
    expected: list[ev.Event] = [
        ev.VersionUnsupported(peer_versions=frozenset(versions))
    ]
    if text:
        expected.insert(0, ev.PlaintextReceived(text=text, offered_otr=False))
    assert bob.receive(body) == expected
    assert bob.data_to_send() == []
    assert bob.state is MessageState.PLAINTEXT


@pytest.mark.parametrize(
    ("query", "versions"),
    [
        ("?OTRv2?", {2}),
        ("?OTR?v2?", {1, 2}),
        ("?OTR?", {1}),
        ("?OTRv2?\nAlice has requested an Off-the-Record private conversation.", {2}),
        ("?OTRv4?", {4}),
    ],
)
def test_a_query_without_v3_is_reported_and_starts_nothing(
    keys, query, versions
) -> None:
    bob = fresh(keys)
    offered = frozenset(versions)
    assert bob.receive(query) == [
        ev.QueryReceived(versions=offered, answered=False),
        ev.VersionUnsupported(peer_versions=offered),
    ]
    assert bob.data_to_send() == []


def test_a_query_offering_no_version_is_not_unsupported(keys) -> None:
    bob = fresh(keys)
    assert bob.receive("?OTRv?") == [
        ev.QueryReceived(versions=frozenset(), answered=False)
    ]


def test_a_v2_commit_is_reported_not_refused(keys) -> None:
    bob = fresh(keys)
    assert bob.receive(v2_commit()) == [
        ev.VersionUnsupported(peer_versions=frozenset({2}))
    ]
    assert bob.data_to_send() == []
    assert bob.their_tag == 0


@pytest.mark.parametrize(
    "body",
    [
        "?OTRv2?",
        "?OTR?v2?",
        "forged" + WHITESPACE_BASE + WHITESPACE_V2,
        "forged" + WHITESPACE_BASE + WHITESPACE_V3,
        v2_commit(),
    ],
    ids=["query-v2", "query-v1-v2", "tag-v2", "tag-v3", "v2-commit"],
)
def test_offers_in_the_clear_leave_an_encrypted_session_as_it_was(keys, body) -> None:
    alice, bob = secure_pair(keys)
    ssid = bob.ssid
    bob.receive(body)
    assert bob.data_to_send() == []  # no new AKE, no reply
    assert bob.state is MessageState.ENCRYPTED
    assert bob.ssid == ssid
    alice.send("still private")
    (data,) = alice.data_to_send()
    assert bob.receive(data) == [ev.MessageReceived(text="still private")]


def test_a_tag_while_another_instance_is_encrypted_starts_nothing(keys) -> None:
    bob = fresh(keys)
    body = "hi" + WHITESPACE_BASE + WHITESPACE_V3
    events = bob.receive(body, peer_encrypted=True)
    assert events == [ev.PlaintextReceived(text="hi", offered_otr=True)]
    assert bob.data_to_send() == []
