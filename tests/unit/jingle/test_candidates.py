from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError
from xfer.jingle.candidates import (
    MAX_DIRECT,
    Candidate,
    CandidateType,
    Nomination,
    connect_order,
    could_win,
    may_connect,
    nominate,
    offer_order,
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


# -- giving up tries once the peer reported -------------------------------------


def test_after_the_peers_report_only_higher_priority_tries_could_win():
    # The peer reached our proxy: its direct candidate could still beat
    # that, its proxy of lower local preference never could.
    picked = cand("ours", CandidateType.PROXY, local=1)
    for initiator in (True, False):
        assert could_win(cand("d"), peer_used=picked, we_are_initiator=initiator)
        assert not could_win(
            cand("p", CandidateType.PROXY, local=0),
            peer_used=picked,
            we_are_initiator=initiator,
        )
    # The peer reached our direct candidate: none of its proxies could win.
    direct = cand("ours-d", local=5)
    assert not could_win(
        cand("p", CandidateType.PROXY, 65535), peer_used=direct, we_are_initiator=True
    )


def test_an_equal_priority_try_could_win_only_for_the_initiator():
    # XEP-0260 rule 4: equal priorities, the initiator's choice wins.
    picked, mine = cand("ours", local=7), cand("theirs", local=7)
    assert could_win(mine, peer_used=picked, we_are_initiator=True)
    assert not could_win(mine, peer_used=picked, we_are_initiator=False)


@given(
    p_try=st.integers(0, 127 << 16),
    p_used=st.integers(0, 127 << 16),
    initiator=st.booleans(),
)
def test_a_try_given_up_could_never_have_been_nominated(p_try, p_used, initiator):
    """Whatever the priorities: a try ``could_win`` gives up would, had it
    been reached, have lost the nomination to the peer's pick; one it keeps
    would have won it."""
    trying = Candidate(cid="t", host="h", port=1, jid="peer", priority=p_try)
    used = Candidate(cid="u", host="h", port=2, jid="us", priority=p_used)
    won = nominate(we_used=trying, peer_used=used, we_are_initiator=initiator)
    assert won is not None
    assert could_win(trying, peer_used=used, we_are_initiator=initiator) == (
        won.candidate == trying
    )


# -- which addresses we offer ------------------------------------------------------

HOST = [
    "127.0.0.1",
    "::1",
    "192.168.1.20",
    "10.0.0.5",
    "fd00::2",
    "2a01:4f8::20",
    "93.184.216.34",
    "fe80::1%eth0",
    "169.254.7.7",
    "0.0.0.0",
    "224.0.0.1",
    "::ffff:192.168.1.20",
    "not-an-address",
]


def test_the_address_toward_the_server_comes_first() -> None:
    ordered = offer_order(HOST, toward_server="10.0.0.5", loopback=False)
    assert ordered[0] == "10.0.0.5"


def test_global_then_private_then_link_local_families_alternating() -> None:
    ordered = offer_order(HOST, toward_server=None, loopback=False)
    assert ordered == [
        "2a01:4f8::20",
        "93.184.216.34",
        "fd00::2",
        "192.168.1.20",
        "10.0.0.5",
        "169.254.7.7",
    ]


def test_never_loopback_toward_a_remote_peer_and_last_otherwise() -> None:
    remote = offer_order(HOST, toward_server=None, loopback=False)
    assert not {"127.0.0.1", "::1"} & set(remote)
    local = offer_order(HOST, toward_server=None, loopback=True)
    assert set(local[-2:]) == {"127.0.0.1", "::1"}


def test_ipv6_link_local_unspecified_multicast_and_mapped_are_never_offered() -> None:
    ordered = offer_order(HOST, toward_server=None, loopback=True)
    for bad in ("fe80::1%eth0", "0.0.0.0", "224.0.0.1", "::ffff:192.168.1.20"):
        assert bad not in ordered
    assert "not-an-address" not in ordered


def test_at_most_max_direct_addresses_without_duplicates() -> None:
    many = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(40)] + ["10.1.0.1"]
    ordered = offer_order(many, toward_server=None, loopback=False)
    assert len(ordered) == MAX_DIRECT
    assert len(set(ordered)) == len(ordered)


# -- where a peer's candidate may make us connect --------------------------------


@pytest.mark.parametrize(
    "address",
    ["192.168.1.20", "10.0.0.5", "203.0.113.9", "2001:db8::5", "fe80::1%eth0"],
)
def test_ordinary_addresses_may_be_connected_to(address: str) -> None:
    assert may_connect(address, loopback=False)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "0.0.0.0",  # reaches this host's own services on Linux
        "::",
        "::ffff:127.0.0.1",  # loopback in disguise
        "255.255.255.255",
        "224.0.0.251",
        "ff02::1",
        "240.0.0.1",
        "fe80::1",  # link-local without a scope cannot be reached anyway
        "localhost",  # names are resolved first; the addresses are checked
    ],
)
def test_a_peer_cannot_point_us_at_this_host_or_a_group(address: str) -> None:
    assert not may_connect(address, loopback=False)


def test_loopback_only_when_the_peer_may_be_on_this_host() -> None:
    assert may_connect("127.0.0.1", loopback=True)
    assert may_connect("::1", loopback=True)
    assert not may_connect("0.0.0.0", loopback=True)
    assert not may_connect("::ffff:127.0.0.1", loopback=True)
