"""Sorting a room's occupants into recipients and the skipped, with reasons."""

from __future__ import annotations

import pytest

from xfer.errors import LocalProtocolError
from xfer.xmpp.muc import ANONYMOUS, UNTRUSTED, Occupant, RoomView, recipients

ROOM = "team@conference.example.org"
TRUSTED = {"bob@example.org", "dave@example.org"}


def test_only_shown_and_trusted_jids_are_recipients() -> None:
    view = RoomView(
        room=ROOM,
        occupants=(
            Occupant("bob", "bob@example.org"),
            Occupant("bob-phone", "bob@example.org"),  # once per account
            Occupant("carol", "carol@example.org"),
            Occupant("ghost", None),
            Occupant("dave", "dave@example.org"),
        ),
    )
    send, skipped = recipients(view, TRUSTED.__contains__)
    assert send == ["bob@example.org", "dave@example.org"]
    assert skipped == {
        f"{ROOM}/carol (carol@example.org)": UNTRUSTED,
        f"{ROOM}/ghost": ANONYMOUS,
    }


def test_everyone_anonymous_means_no_recipient() -> None:
    view = RoomView(room=ROOM, occupants=(Occupant("a", None), Occupant("b", None)))
    send, skipped = recipients(view, lambda _jid: True)
    assert send == []
    assert set(skipped.values()) == {ANONYMOUS}


def test_an_empty_room_is_an_error() -> None:
    with pytest.raises(LocalProtocolError, match="nobody else"):
        recipients(RoomView(room=ROOM), lambda _jid: True)
