"""What the peers of one OTR account can make it hold is bounded: sessions
per bare JID and in all, idle time, and fragment memory across sessions."""

from __future__ import annotations

import pytest

from xfer.errors import RemoteProtocolError
from xfer.otr import Account, MessageState, PrivateKey
from xfer.otr.account import Limits
from xfer.otr.messages import DHKey


@pytest.fixture(scope="module")
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


def dh_key(tag: int) -> str:
    return DHKey(sender_tag=tag, receiver_tag=0x2222, gy=5).encode()


def first_fragment(tag: int, chars: int) -> str:
    return f"?OTR|{tag:08x}|00002222,00001,00002,{'A' * chars},"


def relay(a: Account, b: Account, a_name: str, b_name: str, now: float) -> None:
    for _ in range(10):
        moved = False
        for _, text in a.data_to_send():
            moved = True
            b.receive(a_name, text, now=now)
        for _, text in b.data_to_send():
            moved = True
            a.receive(b_name, text, now=now)
        if not moved:
            return


def test_sessions_are_bounded_per_bare_jid_across_resources(keys):
    bob = Account(keys[1], our_tag=0x2222)
    cap = bob.limits.sessions_per_peer
    for resource in range(cap):
        bob.receive(f"mallory@x/r{resource}", dh_key(0x100 + resource))
    for resource in range(cap, 40):
        with pytest.raises(RemoteProtocolError, match="too many"):
            bob.receive(f"mallory@x/r{resource}", dh_key(0x100 + resource))
    assert sum(len(bob.sessions(p)) for p in bob.peers()) == 16
    # Another account is not affected.
    bob.receive("alice@x/1", "?OTRv3?")
    assert bob.data_to_send()


def test_sessions_are_bounded_in_total(keys):
    bob = Account(keys[1], our_tag=0x2222)
    for n in range(bob.limits.sessions):
        bob.receive(f"peer{n}@x/r", "hello")
    with pytest.raises(RemoteProtocolError, match="too many OTR sessions"):
        bob.receive("one-more@x/r", "hello")
    assert len(bob.peers()) == bob.limits.sessions
    # Our own user may still start a conversation.
    bob.session("friend@x/r").query()
    assert bob.data_to_send() == [("friend@x/r", "?OTRv3?")]


def test_a_newcomer_replaces_only_an_idle_unencrypted_session(keys):
    alice = Account(keys[0], our_tag=0x1111)
    bob = Account(keys[1], our_tag=0x2222, limits=Limits(sessions=3, evict_after=60))
    bob.session("alice@x/1").start_ake()  # bob: a master and an instance
    relay(alice, bob, "alice@x/1", "bob@x/1", now=0.0)
    secure = bob.best("alice@x/1")
    assert secure is not None
    # bob holds alice's master and instance sessions; one more idle one:
    bob.receive("idle@x/r", "hello", now=10.0)
    assert len(bob.peers()) == 2
    # Full, and nothing idle long enough: refused.
    with pytest.raises(RemoteProtocolError, match="too many"):
        bob.receive("new@x/r", "hello", now=30.0)
    # Much later, the longest idle non-encrypted session (alice's master, idle
    # since 0) makes room; the encrypted one never does.
    bob.receive("new@x/r", "hello", now=100.0)
    assert bob.sessions("alice@x/1") == [secure]
    bob.receive("newer@x/r", "hello", now=200.0)
    assert bob.peers() == {"alice@x/1", "new@x/r", "newer@x/r"}
    assert bob.best("alice@x/1") is secure
    assert secure.state is MessageState.ENCRYPTED
    bob.receive("newest@x/r", "hello", now=230.0)  # replaces new@x, idle 130 s
    assert bob.peers() == {"alice@x/1", "newer@x/r", "newest@x/r"}
    # Now only the encrypted one and two recent ones: refused again.
    with pytest.raises(RemoteProtocolError, match="too many"):
        bob.receive("latest@x/r", "hello", now=250.0)
    assert bob.best("alice@x/1") is secure


def test_expire_drops_idle_sessions_and_keeps_active_ones(keys):
    alice = Account(keys[0], our_tag=0x1111)
    bob = Account(keys[1], our_tag=0x2222, limits=Limits(idle=600, idle_encrypted=3600))
    assert bob.expire(1000.0) == 0  # the adapter tells the time now and then
    bob.session("alice@x/1").start_ake()  # bob: a master and an instance
    relay(alice, bob, "alice@x/1", "bob@x/1", now=1000.0)
    bob.receive("stranger@x/r", "hello", now=1000.0)
    bob.receive("chatty@x/r", "hello", now=1000.0)
    bob.receive("chatty@x/r", "hello again", now=1500.0)
    assert bob.expire(1500.0) == 0
    # stranger@x and alice's master (idle 700 s) go; chatty and the encrypted
    # session (idle 700 s, allowed an hour) stay.
    assert bob.expire(1700.0) == 2
    assert bob.peers() == {"alice@x/1", "chatty@x/r"}
    assert bob.best("alice@x/1") is not None
    # Traffic keeps the encrypted session alive...
    alice.best("bob@x/1").send("ping")
    relay(alice, bob, "alice@x/1", "bob@x/1", now=4000.0)
    assert bob.expire(5000.0) == 1  # chatty
    assert bob.best("alice@x/1") is not None
    # ...and without it, it too expires.
    assert bob.expire(7601.0) == 1
    assert bob.peers() == set()
    assert bob.secure_sessions() == []


def test_fragments_are_bounded_across_all_sessions(keys):
    bob = Account(keys[1], our_tag=0x2222)
    chunk = 200_000  # under the 256 KiB of one message
    fits = bob.limits.fragment_chars // chunk
    for n in range(fits):
        assert bob.receive(f"p{n}@x/r", first_fragment(0x100 + n, chunk))[1] == []
    with pytest.raises(RemoteProtocolError, match="no room"):
        bob.receive("last@x/r", first_fragment(0x999, chunk))
    # Dropping a session gives its room back.
    assert bob.forget("p0@x/r") == 1
    assert bob.receive("last@x/r", first_fragment(0x999, chunk))[1] == []


def test_expired_sessions_give_their_fragment_room_back(keys):
    bob = Account(keys[1], our_tag=0x2222, limits=Limits(fragment_chars=1000))
    bob.receive("a@x/r", first_fragment(0x100, 900), now=0.0)
    with pytest.raises(RemoteProtocolError, match="no room"):
        bob.receive("b@x/r", first_fragment(0x101, 900), now=1.0)
    assert bob.expire(1000.0) == 2
    bob.receive("b@x/r", first_fragment(0x101, 900), now=1000.0)
