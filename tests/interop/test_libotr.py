"""xfer's OTR v3 against libotr 4.1, the reference implementation (via ctypes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.interop.libotr import POLICY_DEFAULT, POLICY_V2_ONLY, LibOTRPeer
from xfer.errors import RemoteProtocolError
from xfer.otr import MessageState, Policy, Session
from xfer.otr import events as ev
from xfer.otr.ake import AuthState
from xfer.otr.messages import WHITESPACE_BASE, WHITESPACE_V2, WHITESPACE_V3
from xfer.xmpp.versions import reply_text

pytestmark = pytest.mark.libotr

US = "bob@example.org"  # how libotr names the xfer side
THEM = "alice@example.org"


@dataclass
class Link:
    """Carries messages between libotr and an xfer session until both are quiet."""

    lo: LibOTRPeer
    me: Session
    xfer_events: list[Any] = field(default_factory=list)
    lo_received: list[tuple[bool, str | None, list[tuple[int, bytes]]]] = field(
        default_factory=list
    )
    to_xfer: list[str] = field(default_factory=list)

    def pump(self, rounds: int = 20) -> list[Any]:
        start = len(self.xfer_events)
        for _ in range(rounds):
            moved = False
            for text in self.lo.take():
                moved = True
                self.to_xfer.append(text)
                self.xfer_events += self.me.receive(text)
            for text in self.me.data_to_send():
                moved = True
                self.lo_received.append(self.lo.receive(US, text))
            if not moved:
                break
        return self.xfer_events[start:]

    def lo_texts(self) -> list[str]:
        return [text for ignore, text, _ in self.lo_received if text and not ignore]


def secure(link: Link, *, xfer_commits: bool = True) -> list[Any]:
    if xfer_commits:
        link.me.start_ake()
    else:
        link.me.query()  # libotr answers a query with its D-H Commit
    events = link.pump()
    assert link.me.state is MessageState.ENCRYPTED
    assert link.lo.msgstate == "encrypted"
    return events


@pytest.fixture
def link(libotr_peer: LibOTRPeer, xfer_session: Session) -> Link:
    return Link(libotr_peer, xfer_session)


def test_fingerprints_agree_with_libotr(libotr_peer, dsa_keys):
    ours = dsa_keys[0].public.fingerprint.hex().upper()
    assert libotr_peer.fingerprint().replace(" ", "") == ours


@pytest.mark.parametrize(
    "xfer_commits", [True, False], ids=["xfer-commits", "libotr-commits"]
)
def test_ake_in_either_role(link, dsa_keys, xfer_commits):
    events = secure(link, xfer_commits=xfer_commits)
    (gone,) = [e for e in events if isinstance(e, ev.GoneSecure)]
    assert gone.fingerprint == dsa_keys[0].public.fingerprint
    assert gone.their_tag == 0x9ABCDEF0
    assert ("gone_secure", 0x00000123) in link.lo.events


def test_libotr_query_makes_xfer_commit(link):
    link.lo.query(US)
    events = link.pump()
    assert isinstance(events[0], ev.QueryReceived)
    assert events[0].answered
    assert link.me.state is MessageState.ENCRYPTED
    assert link.lo.msgstate == "encrypted"


def test_libotr_whitespace_tag_makes_xfer_commit(link):
    """libotr's default policy appends the whitespace tag to the first plain
    message: xfer strips it, shows the text, and starts the AKE."""
    link.lo.policy = POLICY_DEFAULT
    link.lo.send(US, "hello from libotr")
    ((_, tagged),) = link.lo.outbox
    assert (
        tagged == "hello from libotr" + WHITESPACE_BASE + WHITESPACE_V2 + WHITESPACE_V3
    )
    events = link.pump()
    assert events[0] == ev.PlaintextReceived(text="hello from libotr", offered_otr=True)
    assert link.me.state is MessageState.ENCRYPTED
    assert link.lo.msgstate == "encrypted"
    assert ("gone_secure", 0x00000123) in link.lo.events
    link.me.send("private now")
    link.pump()
    assert link.lo_texts() == ["private now"]


def test_a_v2_only_libotr_is_reported_and_no_ake_starts(link):
    link.lo.policy = POLICY_V2_ONLY
    link.lo.send(US, "hello")  # tagged for version 2 only
    link.lo.query(US)  # "?OTRv2?" and libotr's explanation
    v2 = frozenset({2})
    assert link.pump() == [
        ev.PlaintextReceived(text="hello", offered_otr=False),
        ev.VersionUnsupported(peer_versions=v2),
        ev.QueryReceived(versions=v2, answered=False),
        ev.VersionUnsupported(peer_versions=v2),
    ]
    assert link.lo_received == []  # xfer's engine sent nothing
    assert link.me.state is MessageState.PLAINTEXT
    assert link.lo.msgstate == "plaintext"
    # The adapter's plain reply reaches libotr's user as it is, and libotr
    # stops tagging its messages (Protocol-v3: the peer answered in plain).
    ignore, text, _ = link.lo.receive(US, reply_text(v2))
    assert not ignore
    assert text is None  # libotr: show the message unchanged
    link.lo.send(US, "and now?")
    assert link.lo.take() == ["and now?"]


def test_a_v2_commit_from_libotr_is_reported(link):
    """A v2-only libotr starts a version 2 AKE when asked for version 2 (xfer
    never asks: the test writes that query)."""
    link.lo.policy = POLICY_V2_ONLY
    link.lo.receive(US, "?OTRv2?")
    (commit,) = link.lo.take()
    assert commit.startswith("?OTR:AAIC")
    assert link.me.receive(commit) == [
        ev.VersionUnsupported(peer_versions=frozenset({2}))
    ]
    assert link.me.data_to_send() == []
    assert link.me.ake.state is AuthState.NONE


def test_simultaneous_commits_resolve(link):
    link.me.query()
    (query,) = link.me.data_to_send()
    link.lo.receive(US, query)  # libotr now sends its own D-H Commit...
    link.me.start_ake()  # ...and so do we, before seeing it
    link.pump()
    assert link.me.state is MessageState.ENCRYPTED
    assert link.lo.msgstate == "encrypted"


def test_messages_both_ways_across_key_rotations(link):
    secure(link)
    # Alternate, then bursts from one side, so both sides rotate many times.
    for i in range(4):
        link.lo.send(US, f"from libotr {i} é")
        assert link.pump() == [ev.MessageReceived(text=f"from libotr {i} é")]
        link.me.send(f"from xfer {i} ✓")
        link.pump()
        assert link.lo_texts()[-1] == f"from xfer {i} ✓"
    for i in range(3):
        link.lo.send(US, f"burst {i}")
    assert [e.text for e in link.pump()] == ["burst 0", "burst 1", "burst 2"]
    for i in range(3):
        link.me.send(f"reply {i}")
    link.pump()
    assert link.lo_texts()[-3:] == ["reply 0", "reply 1", "reply 2"]


def test_fragmented_messages_both_ways(libotr_peer, dsa_keys):
    libotr_peer.max_message_size = 120
    me = Session(dsa_keys[1], our_tag=0x123, policy=Policy(max_message_size=150))
    link = Link(libotr_peer, me)
    secure(link)  # the AKE messages themselves are fragmented
    assert any(t.startswith("?OTR|") for t in link.to_xfer)
    long_text = "fragment me " * 40
    link.lo.send(US, long_text)
    assert link.pump() == [ev.MessageReceived(text=long_text)]
    link.me.send(long_text + "!")
    outgoing = link.me.data_to_send()
    assert len(outgoing) > 3
    assert all(len(t) <= 150 for t in outgoing)
    for text in outgoing:
        link.lo_received.append(link.lo.receive(US, text))
    assert link.lo_texts()[-1] == long_text + "!"


@pytest.mark.parametrize("rotations", [0, 3])
def test_extra_symmetric_key_both_ways(link, rotations):
    secure(link)
    for i in range(rotations):
        link.lo.send(US, f"rotate {i}")
        link.pump()
        link.me.send(f"rotate back {i}")
        link.pump()
    # xfer -> libotr
    key = link.me.extra_symmetric_key(0x78666572, b"transfer-id")
    link.pump()
    symkeys = [e for e in link.lo.events if e[0] == "symkey"]
    assert symkeys[-1] == ("symkey", 0x78666572, b"transfer-id", key)
    # libotr -> xfer
    key = link.lo.symkey(7, b"\x00\x01binary")
    events = link.pump()
    assert events == [ev.SymmetricKeyReceived(use=7, data=b"\x00\x01binary", key=key)]
    assert events[0].key == key


def test_extra_symmetric_keys_differ_after_rotation(link):
    secure(link)
    first = link.me.extra_symmetric_key(1)
    link.pump()
    link.lo.send(US, "rotate")
    link.pump()
    link.me.send("rotate")
    link.pump()
    second = link.me.extra_symmetric_key(1)
    link.pump()
    assert first != second
    assert [e[3] for e in link.lo.events if e[0] == "symkey"] == [first, second]


@pytest.mark.parametrize("question", [None, "our first pet?"])
@pytest.mark.parametrize("same", [True, False], ids=["same-secret", "other-secret"])
def test_smp_started_by_xfer(link, dsa_keys, question, same):
    secure(link)
    link.me.smp_start(b"correct horse", question)
    link.pump()
    kind = "ask_for_answer" if question else "ask_for_secret"
    assert ("smp", kind, question) in link.lo.events
    link.lo.smp_respond(b"correct horse" if same else b"battery staple")
    events = link.pump()
    if same:
        assert events == [ev.SMPSucceeded(fingerprint=dsa_keys[0].public.fingerprint)]
        assert ("smp", "success", None) in link.lo.events
    else:
        assert events == [ev.SMPFailed(cheated=False)]
        assert ("smp", "failure", None) in link.lo.events


@pytest.mark.parametrize("question", [None, "where did we meet?"])
@pytest.mark.parametrize("same", [True, False], ids=["same-secret", "other-secret"])
def test_smp_started_by_libotr(link, question, same):
    secure(link)
    link.lo.smp_start(b"shared", question)
    assert link.pump() == [ev.SMPAsked(question=question)]
    link.me.smp_answer(b"shared" if same else b"not shared")
    events = link.pump()
    expected = "success" if same else "failure"
    assert ("smp", expected, None) in link.lo.events
    assert [type(e) for e in events] == [ev.SMPSucceeded if same else ev.SMPFailed]


def test_libotr_heartbeat_is_handled(link):
    secure(link)
    link.lo.make_heartbeat_due()
    link.me.send("ping")
    link.pump()
    heartbeats = [e for e in link.lo.events if e[1:2] == ("log_heartbeat_sent",)]
    assert heartbeats, "libotr did not send a heartbeat"
    assert link.xfer_events[-1:] != [ev.MessageReceived(text="")]
    # Keys rotated through the heartbeat; traffic still flows both ways.
    link.lo.send(US, "after heartbeat")
    assert link.pump() == [ev.MessageReceived(text="after heartbeat")]
    link.me.send("still fine")
    link.pump()
    assert link.lo_texts()[-1] == "still fine"


def test_disconnect_both_ways(link, libotr_peer, dsa_keys):
    secure(link)
    link.lo.disconnect(US, 0x123)
    assert link.pump() == [ev.GoneInsecure()]
    assert link.me.state is MessageState.FINISHED
    # A new AKE brings it back; then xfer ends it.
    secure(link)
    link.me.end()
    link.pump()
    assert link.lo.msgstate == "finished"
    assert link.me.state is MessageState.PLAINTEXT


def test_replayed_and_tampered_messages_leave_the_session_intact(link):
    secure(link)
    link.lo.send(US, "original")
    (text,) = link.lo.take()
    assert link.me.receive(text) == [ev.MessageReceived(text="original")]
    with pytest.raises(RemoteProtocolError, match="replay"):
        link.me.receive(text)
    link.me.data_to_send()  # the error reply the spec asks for
    link.lo.send(US, "second")
    (text,) = link.lo.take()
    body = text[len("?OTR:") : -1]
    flipped = body[:-12] + ("A" if body[-12] != "A" else "B") + body[-11:]
    with pytest.raises(RemoteProtocolError):
        link.me.receive("?OTR:" + flipped + ".")
    link.me.data_to_send()
    assert link.me.receive(text) == [ev.MessageReceived(text="second")]
    link.me.send("intact")
    link.pump()
    assert link.lo_texts()[-1] == "intact"


def test_messages_for_another_instance_are_ignored(link, dsa_keys):
    secure(link)
    other = Session(dsa_keys[2], our_tag=0x456)
    link.lo.send(US, "for 0x123 only")
    (text,) = link.lo.take()
    assert other.receive(text) == []  # addressed to instance 0x123
    assert link.me.receive(text) == [ev.MessageReceived(text="for 0x123 only")]


def test_an_xfer_offer_travels_through_libotr_intact(link):
    """libotr relays TLV 8 with our payload byte for byte, both ways."""
    from xfer.transfer.offer import XFER_USE, TransferOffer

    secure(link)
    offer = TransferOffer(
        transfer_id=b"t" * 16,
        salt=b"s" * 32,
        suite=1,
        chunk_size=65536,
        size=10,
        sha256=b"h" * 32,
        name="report.pdf",
    )
    key = link.me.extra_symmetric_key(XFER_USE, offer.encode())
    link.pump()
    (_, use, data, lo_key) = [e for e in link.lo.events if e[0] == "symkey"][-1]
    assert (use, lo_key) == (XFER_USE, key)
    assert TransferOffer.decode(data) == offer
    key = link.lo.symkey(XFER_USE, offer.encode())
    (received,) = link.pump()
    assert received.key == key
    assert TransferOffer.decode(received.data) == offer
