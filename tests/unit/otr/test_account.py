from __future__ import annotations

import pytest

from xfer.errors import RemoteProtocolError
from xfer.otr import Account, MessageState, PrivateKey
from xfer.otr import events as ev
from xfer.otr.account import MAX_INSTANCES_PER_PEER
from xfer.otr.ake import AuthState
from xfer.otr.messages import WHITESPACE_BASE, WHITESPACE_V2, WHITESPACE_V3, DHKey


@pytest.fixture(scope="module")
def keys():
    return PrivateKey.generate(), PrivateKey.generate()


def relay(a: Account, b: Account, a_name: str, b_name: str) -> list[ev.Event]:
    seen: list[ev.Event] = []
    for _ in range(10):
        moved = False
        for _, text in a.data_to_send():
            moved = True
            seen += b.receive(a_name, text)[1]
        for _, text in b.data_to_send():
            moved = True
            seen += a.receive(b_name, text)[1]
        if not moved:
            break
    return seen


def test_two_accounts_route_to_instance_sessions(keys):
    alice = Account(keys[0], our_tag=0x1111)
    bob = Account(keys[1], our_tag=0x2222)
    alice.session("bob@x/1").start_ake()
    relay(alice, bob, "alice@x/1", "bob@x/1")
    assert bob.best("alice@x/1") is bob.session("alice@x/1", 0x1111)
    assert alice.best("bob@x/1") is alice.session("bob@x/1", 0x2222)
    assert alice.best("bob@x/1").state is MessageState.ENCRYPTED
    alice.best("bob@x/1").send("hi")
    assert relay(alice, bob, "alice@x/1", "bob@x/1") == [ev.MessageReceived(text="hi")]
    assert alice.best("nobody@x") is None


def test_an_instance_flood_is_bounded(keys):
    bob = Account(keys[1], our_tag=0x2222)
    for tag in range(0x100, 0x100 + MAX_INSTANCES_PER_PEER):
        bob.receive(
            "mallory@x", DHKey(sender_tag=tag, receiver_tag=0x2222, gy=5).encode()
        )
    with pytest.raises(RemoteProtocolError, match="too many"):
        bob.receive(
            "mallory@x", DHKey(sender_tag=0x9999, receiver_tag=0x2222, gy=5).encode()
        )
    # Other peers are unaffected.
    bob.receive("alice@x", "?OTRv3?")
    assert bob.data_to_send()


@pytest.mark.parametrize("queries", [1, 2, 3])
def test_a_restarted_peer_can_run_the_ake_again(keys, queries):
    """bob keeps his sessions; alice restarts (same key and instance tag) and
    asks for OTR again each time. bob's master session answers the query, and
    alice's D-H Key (addressed with her known tag) reaches bob's existing
    instance session: it must continue the master's AKE, not drop it."""
    bob = Account(keys[1], our_tag=0x2222)
    for _ in range(queries):
        alice = Account(keys[0], our_tag=0x1111)  # a fresh process
        alice.session("bob@x/1").query()
        relay(alice, bob, "alice@x/1", "bob@x/1")
        assert alice.best("bob@x/1") is not None
        assert bob.best("alice@x/1") is not None
        alice.best("bob@x/1").send("still there?")
        got = relay(alice, bob, "alice@x/1", "bob@x/1")
        assert ev.MessageReceived(text="still there?") in got


def deliver(sender: Account, name: str, receivers: list[Account]) -> list[ev.Event]:
    """Everything ``sender`` queued, to every receiver (a server may deliver
    a message for one full JID to whoever it likes)."""
    seen: list[ev.Event] = []
    for _, text in sender.data_to_send():
        for receiver in receivers:
            seen += receiver.receive(name, text)[1]
    return seen


def secured(events: list[ev.Event]) -> list[int]:
    return [e.their_tag for e in events if isinstance(e, ev.GoneSecure)]


@pytest.mark.parametrize("first", ["peer", "forger"])
def test_one_commit_of_ours_is_continued_by_one_instance_only(keys, first):
    """bob's master session sends one D-H Commit to alice@x/1. The real alice
    and a forger (another key, another instance tag, the same full JID: the
    server can send anything from anyone) both answer it. The first answer's
    instance takes the AKE over; the master keeps no open AKE, so the second
    D-H Key finds nothing to continue and only one instance goes secure."""
    mallory_key = PrivateKey.generate()
    bob = Account(keys[1], our_tag=0x2222)
    alice = Account(keys[0], our_tag=0x1111)
    forger = Account(mallory_key, our_tag=0x6666)
    bob.session("alice@x/1").start_ake()
    deliver(bob, "bob@x/1", [alice, forger])
    answers = {"peer": alice.data_to_send(), "forger": forger.data_to_send()}
    assert all(len(a) == 1 for a in answers.values())
    second = "forger" if first == "peer" else "peer"
    bob_events = []
    for who in (first, second):
        ((_, dh_key_text),) = answers[who]
        bob_events += bob.receive("alice@x/1", dh_key_text)[1]
        if who == second:
            assert bob.data_to_send() == []  # nothing answers the second
        else:
            deliver(bob, "bob@x/1", [alice, forger])  # the Reveal Signature
    assert bob.session("alice@x/1").ake.state is AuthState.NONE
    for _ in range(5):
        bob_events += deliver(alice, "alice@x/1", [bob])
        bob_events += deliver(forger, "alice@x/1", [bob])
        deliver(bob, "bob@x/1", [alice, forger])
    winner = 0x1111 if first == "peer" else 0x6666
    assert secured(bob_events) == [winner]
    assert [s.their_tag for _, s in bob.secure_sessions()] == [winner]
    loser = bob.session("alice@x/1", 0x6666 if first == "peer" else 0x1111)
    assert loser.state is MessageState.PLAINTEXT
    assert loser.ake.state is AuthState.NONE
    assert bob.session("alice@x/1").ake.state is AuthState.NONE


def test_simultaneous_commits_still_go_secure(keys):
    bob = Account(keys[1], our_tag=0x2222)
    alice = Account(keys[0], our_tag=0x1111)
    bob.session("alice@x/1").start_ake()
    alice.session("bob@x/1").start_ake()
    events = relay(alice, bob, "alice@x/1", "bob@x/1")
    assert alice.best("bob@x/1") is alice.session("bob@x/1", 0x2222)
    assert bob.best("alice@x/1") is bob.session("alice@x/1", 0x1111)
    assert sorted(secured(events)) == [0x1111, 0x2222]
    assert bob.session("alice@x/1").ake.state is AuthState.NONE
    assert alice.session("bob@x/1").ake.state is AuthState.NONE
    bob.best("alice@x/1").send("both started")
    got = relay(alice, bob, "alice@x/1", "bob@x/1")
    assert got == [ev.MessageReceived(text="both started")]


TAGGED = "hello" + WHITESPACE_BASE + WHITESPACE_V2 + WHITESPACE_V3


def test_a_whitespace_tag_starts_the_ake_with_its_sender(keys):
    """libotr's first plain message carries the tag: it goes to the master
    session, whose D-H Commit the peer's instance continues."""
    bob = Account(keys[1], our_tag=0x2222)
    alice = Account(keys[0], our_tag=0x1111)
    _, events = bob.receive("alice@x/1", TAGGED)
    assert events == [ev.PlaintextReceived(text="hello", offered_otr=True)]
    events = relay(alice, bob, "alice@x/1", "bob@x/1")
    assert secured(events) == [0x2222, 0x1111]
    assert bob.best("alice@x/1") is not None


def test_a_whitespace_tag_does_not_rekey_an_encrypted_conversation(keys):
    """The tag carries no instance tag, so it reaches the master session,
    which is never ENCRYPTED itself; the conversation with that full JID is,
    and a forged tag must not start a new AKE in it."""
    bob = Account(keys[1], our_tag=0x2222)
    alice = Account(keys[0], our_tag=0x1111)
    alice.session("bob@x/1").start_ake()
    relay(alice, bob, "alice@x/1", "bob@x/1")
    session = bob.best("alice@x/1")
    assert session is not None
    ssid = session.ssid
    _, events = bob.receive("alice@x/1", TAGGED)
    assert events == [ev.PlaintextReceived(text="hello", offered_otr=True)]
    assert bob.data_to_send() == []
    assert bob.best("alice@x/1") is session
    assert session.ssid == ssid
    # Another full JID of the same account has no conversation: it may start.
    bob.receive("alice@x/2", TAGGED)
    assert [peer for peer, _ in bob.data_to_send()] == ["alice@x/2"]
