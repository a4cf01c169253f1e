"""One xfer account, two libotr logins of the same peer: one session each."""

from __future__ import annotations

import pytest

from tests.interop.libotr import LibOTRPeer
from xfer.otr import Account, MessageState
from xfer.otr import events as ev
from xfer.otr.ake import AuthState

pytestmark = pytest.mark.libotr

PEER = "alice@example.org"
US = "bob@example.org"


@pytest.fixture
def logins(libotr_peer, tmp_path, dsa_keys):
    second = tmp_path / "second"
    second.mkdir()
    other = LibOTRPeer(second, account=PEER, key=dsa_keys[2], instag=0x00000777)
    return [libotr_peer, other]


def pump(account: Account, logins: list[LibOTRPeer]) -> list[tuple[int, object]]:
    """Deliver everything; xfer's output reaches every login, as XMPP may."""
    seen = []
    for _ in range(20):
        moved = False
        for login in logins:
            for text in login.take():
                moved = True
                session, events = account.receive(PEER, text)
                seen += [(session.their_tag, e) for e in events]
        for _, text in account.data_to_send():
            moved = True
            for login in logins:
                login.receive(US, text)
        if not moved:
            return seen
    return seen


@pytest.mark.parametrize("how", ["query", "commit"])
def test_each_login_gets_its_own_session(logins, dsa_keys, how):
    account = Account(dsa_keys[1], our_tag=0x123)
    master = account.session(PEER)
    if how == "query":
        master.query()  # both logins answer with a D-H Commit of their own
        events = pump(account, logins)
    else:
        master.start_ake()  # both logins answer our one commit
        events = pump(account, logins)
        # One commit of ours is continued by one instance only (the first to
        # answer): anyone can claim a tag, so a second answer to the same
        # commit is ignored, and the master keeps no AKE open.
        first_secured = {tag for tag, e in events if isinstance(e, ev.GoneSecure)}
        assert len(first_secured) == 1
        assert master.ake.state is AuthState.NONE
        # The other login gets its session from an AKE of its own: a query
        # (to which each login answers with a commit of its own).
        master.query()
        events += pump(account, logins)
    secured = {tag for tag, e in events if isinstance(e, ev.GoneSecure)}
    assert secured == {0x9ABCDEF0, 0x00000777}
    assert all(login.msgstate == "encrypted" for login in logins)
    first, second = account.session(PEER, 0x9ABCDEF0), account.session(PEER, 0x00000777)
    assert first.state is second.state is MessageState.ENCRYPTED
    assert first.their_fingerprint != second.their_fingerprint

    # Traffic stays in its own session, with its own keys.
    logins[0].send(US, "from the laptop")
    logins[1].send(US, "from the phone")
    got = pump(account, logins)
    assert (0x9ABCDEF0, ev.MessageReceived(text="from the laptop")) in got
    assert (0x00000777, ev.MessageReceived(text="from the phone")) in got
    k1 = first.extra_symmetric_key(1)
    k2 = second.extra_symmetric_key(1)
    pump(account, logins)
    assert k1 != k2
    assert [e[3] for e in logins[0].events if e[0] == "symkey"] == [k1]
    assert [e[3] for e in logins[1].events if e[0] == "symkey"] == [k2]
    assert account.best(PEER) in (first, second)
