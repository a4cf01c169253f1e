from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError
from xfer.jingle.candidates import (
    Candidate,
    CandidateType,
    Nomination,
    connect_order,
    nominate,
    priority,
)


def cand(
    cid: str, kind: CandidateType = CandidateType.DIRECT, local: int = 0
) -> Candidate:
    return Candidate(
        cid=cid,
        host="127.0.0.1",
        port=1080,
        jid="a@x/1",
        priority=priority(kind, local),
        type=kind,
    )


def test_priorities_follow_the_formula():
    assert priority(CandidateType.DIRECT) == 126 << 16
    assert priority(CandidateType.PROXY, 5) == (10 << 16) + 5
    assert priority(CandidateType.TUNNEL, 65535) < priority(CandidateType.ASSISTED)
    with pytest.raises(LocalProtocolError):
        priority(CandidateType.DIRECT, 65536)


def test_connect_order_is_highest_priority_first():
    proxy, direct, tunnel = (
        cand("p", CandidateType.PROXY),
        cand("d"),
        cand("t", CandidateType.TUNNEL),
    )
    assert [c.cid for c in connect_order([proxy, tunnel, direct])] == ["d", "t", "p"]


def test_the_offerer_names_itself_first_in_the_socks5_address():
    ours = Nomination(candidate=cand("d"), ours=True)
    theirs = Nomination(candidate=cand("d"), ours=False)
    assert (
        ours.dst_addr("tsid", "ini@x/1", "res@x/2")
        == hashlib.sha1(b"tsidini@x/1res@x/2").hexdigest().encode()
    )
    assert (
        theirs.dst_addr("tsid", "ini@x/1", "res@x/2")
        == hashlib.sha1(b"tsidres@x/2ini@x/1").hexdigest().encode()
    )


def test_the_offerer_of_a_proxy_activates_it():
    for kind in CandidateType:
        for ours in (True, False):
            n = Nomination(candidate=cand("c", kind), ours=ours)
            proxy = kind is CandidateType.PROXY
            assert n.we_activate == (proxy and ours)
            assert n.peer_activates == (proxy and not ours)


def test_both_failed_means_fall_back():
    assert nominate(we_used=None, peer_used=None, we_are_initiator=True) is None


def test_the_only_working_candidate_is_used():
    theirs, ours = cand("t"), cand("o", CandidateType.PROXY)
    n = nominate(we_used=theirs, peer_used=None, we_are_initiator=False)
    assert (n.candidate, n.ours, n.we_activate) == (theirs, False, False)
    n = nominate(we_used=None, peer_used=ours, we_are_initiator=False)
    assert (n.candidate, n.ours, n.we_activate) == (
        ours,
        True,
        True,
    )  # our proxy: we activate


def test_the_higher_priority_wins():
    direct, proxy = cand("d"), cand("p", CandidateType.PROXY)
    for initiator in (True, False):
        n = nominate(we_used=proxy, peer_used=direct, we_are_initiator=initiator)
        assert n.candidate == direct
        assert n.ours


@given(local=st.integers(0, 65535))
def test_equal_priorities_go_to_the_initiators_choice(local):
    a, b = cand("a", local=local), cand("b", local=local)
    # Both sides, computing independently, agree on the same candidate.
    as_initiator = nominate(we_used=a, peer_used=b, we_are_initiator=True)
    as_responder = nominate(we_used=b, peer_used=a, we_are_initiator=False)
    assert as_initiator.candidate == as_responder.candidate == a
    assert as_initiator.ours is False
    assert as_responder.ours is True


@given(
    p1=st.integers(0, 10 << 16), p2=st.integers(0, 10 << 16), initiator=st.booleans()
)
def test_both_sides_always_nominate_the_same_candidate(p1, p2, initiator):
    mine = Candidate(cid="m", host="h", port=1, jid="j", priority=p1)
    theirs = Candidate(cid="t", host="h", port=2, jid="k", priority=p2)
    # We reached theirs, they reached mine; the peer sees the mirror image.
    ours = nominate(we_used=theirs, peer_used=mine, we_are_initiator=initiator)
    peer = nominate(we_used=mine, peer_used=theirs, we_are_initiator=not initiator)
    assert ours.candidate == peer.candidate
    assert ours.ours != peer.ours
