"""The ``xfer_xep_0096`` plugin through stanzas: a legacy stream-initiation
(XEP-0095/XEP-0096) file offer is answered ``forbidden`` with xfer's reason,
not slixmpp's "No handlers registered", and handed on as a refused offer;
other profiles and requests get XEP-0095's errors; nothing hostile in the
offer gets through unbounded."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import xfer.xmpp.legacy as legacy_plugin
from tests.adapters.xmpp.slix import ME, PEER, StanzaCase
from xfer.notices import VIA_SI, RefusedOffer
from xfer.transfer.policy import ENCRYPTED_ONLY

NS_SI = "http://jabber.org/protocol/si"
NS_FILE = "http://jabber.org/protocol/si/profile/file-transfer"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def si_offer(
    iq_id: str = "si1",
    *,
    name: str | None = "x.pdf",
    size: str | None = "1234567",
    profile: str = NS_FILE,
    kind: str = "set",
    frm: str = PEER,
) -> str:
    """An SI file offer as Pidgin or Psi sends it."""
    attrs = ""
    if name is not None:
        attrs += f" name={quoteattr(name)}"
    if size is not None:
        attrs += f" size={quoteattr(size)}"
    return (
        f'<iq type="{kind}" id="{iq_id}" from="{frm}" to="{ME}">'
        f'<si xmlns="{NS_SI}" id="s5" mime-type="application/pdf" '
        f'profile="{profile}"><file xmlns="{NS_FILE}"{attrs}/>'
        '<feature xmlns="http://jabber.org/protocol/feature-neg">'
        '<x xmlns="jabber:x:data" type="form">'
        '<field var="stream-method" type="list-single">'
        "<option><value>http://jabber.org/protocol/bytestreams</value></option>"
        "<option><value>http://jabber.org/protocol/ibb</value></option>"
        "</field></x></feature></si></iq>"
    )


class SICase(StanzaCase):
    plugins = (("xfer_xep_0096", legacy_plugin, {}),)

    def setUp(self) -> None:
        super().setUp()
        self.refused: list[RefusedOffer] = []
        self.plugin("xfer_xep_0096").on_offer = self.refused.append

    def error(self, iq_id: str) -> tuple[str, str, str | None]:
        """Our answer to ``iq_id``: an error's (condition, type, text)."""
        reply = self.sent()
        assert (reply["type"], reply["id"], reply["to"].full) == ("error", iq_id, PEER)
        return (
            reply["error"]["condition"],
            reply["error"]["type"],
            reply["error"]["text"] or None,
        )


class TestSIOffers(SICase):
    def test_a_file_offer_is_forbidden_with_the_reason(self) -> None:
        self.recv(si_offer())
        assert self.error("si1") == ("forbidden", "cancel", ENCRYPTED_ONLY)
        assert self.refused == [
            RefusedOffer(
                peer=PEER,
                name="x.pdf",
                size=1234567,
                via=VIA_SI,
                reason=ENCRYPTED_ONLY,
            )
        ]
        self.nothing_sent()

    def test_the_answer_carries_no_payload_of_the_offer(self) -> None:
        # The name crossed the servers once already; it is not echoed.
        self.recv(si_offer(name="secret-plans.pdf"))
        reply = self.sent()
        assert reply.xml.find(f"{{{NS_SI}}}si") is None
        assert reply.xml.find(f"{{{NS_FILE}}}file") is None

    def test_a_hostile_name_is_kept_as_sent_but_cut(self) -> None:
        # Shown through xfer.display.shown by whoever shows it; only the
        # length is bounded here.
        # (XML cannot carry ESC or NUL; a C1 CSI, CR, LF and a bidi
        # override it can.)
        hostile = "\u202egpj.exe\x9b2J\r\n\t" + "A" * 100_000
        self.recv(si_offer(name=hostile))
        assert self.error("si1")[0] == "forbidden"
        [refused] = self.refused
        assert refused.name is not None
        assert len(refused.name) == legacy_plugin.MAX_NAME
        assert refused.name.startswith("\u202egpj.exe\x9b2J\r\n\t")

    def test_unusable_sizes_are_unknown(self) -> None:
        for i, size in enumerate(
            ["", "-1", "1e9", "0x10", "\u0661\u0662", "1" * 21, str(2**62 + 1), "12 "]
        ):
            self.recv(si_offer(f"s{i}", size=size))
            assert self.error(f"s{i}")[0] == "forbidden"
        assert [r.size for r in self.refused] == [None] * 8

    def test_sizes_up_to_the_limit_are_believed(self) -> None:
        self.recv(si_offer("a", size="0"))
        self.recv(si_offer("b", size=str(2**62)))
        assert [r.size for r in self.refused] == [0, 2**62]

    def test_an_offer_without_a_file_is_still_refused(self) -> None:
        self.recv(
            f'<iq type="set" id="n1" from="{PEER}" to="{ME}">'
            f'<si xmlns="{NS_SI}" id="s" profile="{NS_FILE}"/></iq>'
        )
        assert self.error("n1") == ("forbidden", "cancel", ENCRYPTED_ONLY)
        assert [(r.name, r.size) for r in self.refused] == [(None, None)]

    def test_another_profile_is_a_bad_profile(self) -> None:
        self.recv(si_offer(profile="urn:example:other"))
        reply = self.sent()
        assert reply["type"] == "error"
        assert (reply["error"]["condition"], reply["error"]["type"]) == (
            "bad-request",
            "modify",
        )
        assert reply.xml.find(f".//{{{NS_SI}}}bad-profile") is not None
        assert self.refused == []

    def test_a_get_is_a_bad_request(self) -> None:
        self.recv(si_offer(kind="get"))
        assert self.error("si1")[:2] == ("bad-request", "modify")
        assert self.refused == []

    def test_results_and_errors_are_never_answered(self) -> None:
        self.recv(si_offer("r1", kind="result"))
        self.recv(si_offer("e1", kind="error"))
        self.nothing_sent()
        assert self.refused == []

    def test_without_a_receiver_the_offer_is_still_refused(self) -> None:
        self.plugin("xfer_xep_0096").on_offer = None
        self.recv(si_offer())
        assert self.error("si1") == ("forbidden", "cancel", ENCRYPTED_ONLY)

    def test_after_plugin_end_slixmpp_answers_again(self) -> None:
        # What a client without the plugin (xfer before it) answered.
        self.xmpp.plugin.disable("xfer_xep_0096")
        self.recv(si_offer())
        reply = self.sent()
        assert reply["error"]["condition"] == "feature-not-implemented"
        assert self.refused == []
