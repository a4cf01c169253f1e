"""The XEP-0166 session machine: every (state, role, action) pair, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError
from xfer.jingle import (
    TRANSITIONS,
    Action,
    JingleError,
    JingleSession,
    Role,
    SessionState,
)


def session_in(state: SessionState, role: Role) -> JingleSession:
    s = JingleSession(sid="s1", role=role)
    s.state = state
    return s


@given(
    state=st.sampled_from(list(SessionState)),
    role=st.sampled_from(list(Role)),
    action=st.sampled_from(list(Action)),
)
def test_every_send_follows_the_table(state, role, action):
    s = session_in(state, role)
    expected = TRANSITIONS.get((state, role, action))
    content = "file" if "transport" in action.value else None
    try:
        s.send(action, content=content)
    except LocalProtocolError:
        replace_answer = action in (Action.TRANSPORT_ACCEPT, Action.TRANSPORT_REJECT)
        assert expected is None or replace_answer  # nothing pending to answer
        assert s.state is state
        return
    assert s.state is expected


@given(
    state=st.sampled_from(list(SessionState)),
    role=st.sampled_from(list(Role)),
    action=st.sampled_from(list(Action)),
)
def test_every_receive_follows_the_table_or_fails_sticky(state, role, action):
    s = session_in(state, role)
    expected = TRANSITIONS.get((state, role.other, action))
    content = "file" if "transport" in action.value else None
    replace_answer = action in (Action.TRANSPORT_ACCEPT, Action.TRANSPORT_REJECT)
    if expected is not None and not replace_answer:
        s.receive(action, content=content)
        assert s.state is expected
        return
    # Not in the table (or an answer to a replace nobody asked for): refused.
    with pytest.raises(JingleError) as info:
        s.receive(action, content=content)
    if state is SessionState.ENDED:
        assert info.value.jingle_condition == "unknown-session"
        assert s.state is SessionState.ENDED
    else:
        assert info.value.jingle_condition == "out-of-order"
        assert s.state is SessionState.ERROR


def test_a_whole_transfer_session():
    ini, res = (
        JingleSession(sid="x", role=Role.INITIATOR),
        JingleSession(sid="x", role=Role.RESPONDER),
    )
    for sender, receiver, action in [
        (ini, res, Action.SESSION_INITIATE),
        (res, ini, Action.TRANSPORT_INFO),
        (res, ini, Action.SESSION_ACCEPT),
        (ini, res, Action.TRANSPORT_REPLACE),
        (res, ini, Action.TRANSPORT_ACCEPT),
        (ini, res, Action.SESSION_INFO),
        (res, ini, Action.SESSION_TERMINATE),
    ]:
        sender.send(action, content="file")
        receiver.receive(action, content="file")
        assert sender.state is receiver.state
    assert ini.state is SessionState.ENDED
    with pytest.raises(JingleError) as info:
        ini.receive(Action.TRANSPORT_INFO, content="file")
    assert (info.value.condition, info.value.jingle_condition) == (
        "item-not-found",
        "unknown-session",
    )


def test_only_the_responder_accepts_and_only_the_initiator_initiates():
    with pytest.raises(LocalProtocolError):
        JingleSession(sid="x", role=Role.RESPONDER).send(Action.SESSION_INITIATE)
    s = session_in(SessionState.PENDING, Role.INITIATOR)
    with pytest.raises(LocalProtocolError):
        s.send(Action.SESSION_ACCEPT)
    with pytest.raises(JingleError):
        session_in(SessionState.PENDING, Role.RESPONDER).receive(Action.SESSION_ACCEPT)


def test_simultaneous_transport_replace_the_initiator_wins():
    ini = session_in(SessionState.ACTIVE, Role.INITIATOR)
    res = session_in(SessionState.ACTIVE, Role.RESPONDER)
    ini.send(Action.TRANSPORT_REPLACE, content="file")
    res.send(Action.TRANSPORT_REPLACE, content="file")
    # The initiator refuses the responder's with a tie-break...
    with pytest.raises(JingleError) as info:
        ini.receive(Action.TRANSPORT_REPLACE, content="file")
    assert (info.value.condition, info.value.jingle_condition) == (
        "conflict",
        "tie-break",
    )
    assert ini.state is SessionState.ACTIVE
    # ...and the responder gives up its own and answers the initiator's.
    res.receive(Action.TRANSPORT_REPLACE, content="file")
    res.send(Action.TRANSPORT_ACCEPT, content="file")
    ini.receive(Action.TRANSPORT_ACCEPT, content="file")
    assert ini.pending_replacements == res.pending_replacements == {}


def test_an_unasked_transport_accept_is_out_of_order():
    s = session_in(SessionState.ACTIVE, Role.INITIATOR)
    with pytest.raises(JingleError) as info:
        s.receive(Action.TRANSPORT_ACCEPT, content="file")
    assert info.value.jingle_condition == "out-of-order"
    assert s.state is SessionState.ERROR
    s.send(Action.SESSION_TERMINATE)  # the only way on
    assert s.state is SessionState.ENDED


def test_pending_replacements_are_bounded():
    from xfer.jingle.session import MAX_CONTENTS

    s = session_in(SessionState.ACTIVE, Role.INITIATOR)
    for i in range(MAX_CONTENTS):
        s.receive(Action.TRANSPORT_REPLACE, content=f"c{i}")
    with pytest.raises(JingleError) as info:
        s.receive(Action.TRANSPORT_REPLACE, content="one too many")
    assert info.value.condition == "bad-request"
