"""The ``xfer_otr`` plugin against libotr 4.1, through ``<message/>``
stanzas (slixmpp's mock stream; libotr via ctypes): what a Pidgin-like
client's user does first, typing a plain message, reaches xfer.

* With libotr's default policy the message carries the whitespace tag, and
  xfer starts the AKE: both sides end ENCRYPTED.
* A client that speaks OTR version 2 only gets one plain reply that says why
  nothing happens, our user gets the ``xfer_otr_unsupported`` event, no AKE
  starts, and a set-up waiting for that client fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import escape

import pytest

import xfer.xmpp.otr as otr_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase, otr_keys
from tests.conftest import require_or_skip
from tests.interop.libotr import (
    POLICY_DEFAULT,
    POLICY_V2_ONLY,
    LibOTRPeer,
    find_libotr,
)
from xfer.errors import PeerIncapable
from xfer.xmpp.versions import reply_text

pytestmark = pytest.mark.libotr

LIBOTR_TAG = 0x9ABCDEF0


class LibOTRCase(StanzaCase):
    """Our client with ``xfer_otr``; the peer at :data:`PEER` is libotr."""

    policy: ClassVar[int] = POLICY_DEFAULT

    @pytest.fixture(autouse=True)
    def _libotr(self, tmp_path: Path) -> None:
        require_or_skip(find_libotr() is not None, "libotr (Debian package libotr5)")
        self.lo = LibOTRPeer(
            tmp_path,
            account=PEER.split("/")[0],
            key=otr_keys()[1],
            instag=LIBOTR_TAG,
            policy=self.policy,
        )

    def setUp(self) -> None:
        ours, _ = otr_keys()
        self.plugins = (
            (
                "xfer_otr",
                otr_plugin,
                {"private_key": ours, "instance_tag": 0x1111_1111},
            ),
        )
        super().setUp()
        self.otr = self.plugin("xfer_otr")
        self.events: list[tuple[str, Any]] = []
        for name in ("xfer_otr_secure", "xfer_otr_unsupported"):
            self.xmpp.add_event_handler(
                name, lambda data, name=name: self.events.append((name, data))
            )

    def from_libotr(self) -> int:
        """Deliver what libotr queued (to us); how many messages."""
        out = self.lo.take()
        for body in out:
            self.recv(
                f'<message type="chat" from="{PEER}" to="{ME}">'
                f"<body>{escape(body)}</body></message>"
            )
        return len(out)

    def to_libotr(self) -> list[tuple[bool, str | None, str]]:
        """Hand what our client sent to libotr: (ignored, its new text, the
        body) for each."""
        got = []
        for msg in self.all_sent():
            assert msg["to"].full == PEER
            ignore, text, _ = self.lo.receive(ME, msg["body"])
            got.append((ignore, text, msg["body"]))
        return got

    def relay(self) -> None:
        for _ in range(8):
            self.to_libotr()
            if not self.from_libotr():
                return


class TestDefaultPolicy(LibOTRCase):
    def test_a_tagged_first_message_ends_in_a_private_conversation(self) -> None:
        self.lo.send(ME, "hello, can you send me the report?")
        self.from_libotr()
        self.relay()
        assert self.lo.msgstate == "encrypted"
        assert self.otr.fingerprint(PEER) == otr_keys()[1].public.fingerprint
        assert ("xfer_otr_secure", (PEER, otr_keys()[1].public.fingerprint)) in (
            self.events
        )
        assert not [e for e in self.events if e[0] == "xfer_otr_unsupported"]


class TestVersion2Only(LibOTRCase):
    policy: ClassVar[int] = POLICY_V2_ONLY

    def test_it_is_told_once_and_no_ake_starts(self) -> None:
        self.lo.send(ME, "hello")  # tagged for version 2 only
        self.lo.query(ME)  # and its user asks for a private conversation
        self.from_libotr()
        ((ignored, text, body),) = self.to_libotr()
        assert body == reply_text({2})
        assert (ignored, text) == (False, None)  # libotr shows it as it is
        assert self.events == [("xfer_otr_unsupported", (PEER, frozenset({2})))]
        assert self.lo.msgstate == "plaintext"
        assert self.otr.session(PEER) is None
        # libotr no longer tags its messages; plain text is not for xfer.
        self.lo.send(ME, "hello?")
        self.from_libotr()
        self.nothing_sent()

    def test_a_set_up_with_it_fails_when_it_says_so(self) -> None:
        task = self.start(self.otr.secure(PEER, timeout=30))
        ((ignored, _, body),) = self.to_libotr()
        assert body.startswith("?OTR:AAMC")
        assert ignored  # libotr without version 3 ignores our D-H Commit
        assert self.lo.take() == []
        self.lo.send(ME, "hi, are you there?")
        self.from_libotr()
        with pytest.raises(PeerIncapable, match="OTR version 3"):
            self.run_coro(task)
