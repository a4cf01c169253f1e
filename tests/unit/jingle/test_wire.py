"""The Jingle XML codec: what xfer sends parses back, malformed input is refused."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import old_module
from xfer.jingle import Action, JingleError, Reason, Role
from xfer.jingle.candidates import Candidate, CandidateType
from xfer.jingle.files import Checksum, FileDescription, Range, Received
from xfer.jingle.wire import (
    NS_JINGLE,
    Content,
    Encrypted,
    IBBTransport,
    Jingle,
    S5BTransport,
    build,
    parse,
)

TID = bytes(range(16))


def offer() -> Jingle:
    return Jingle(
        action=Action.SESSION_INITIATE,
        sid="s1",
        initiator="alice@example.org/a",
        contents=(
            Content(
                name="file",
                creator=Role.INITIATOR,
                senders="initiator",
                description=FileDescription(
                    name=f"{TID.hex()}.xfer",
                    size=1234,
                    range=Range(offset=10),
                    hashes=(("sha-256", bytes(32)),),
                ),
                application="urn:xmpp:jingle:apps:file-transfer:5",
                transport=S5BTransport(
                    sid="t1",
                    dstaddr="ab" * 20,
                    mode="tcp",
                    candidates=(
                        Candidate(
                            cid="c1",
                            host="192.0.2.1",
                            port=4000,
                            jid="alice@example.org/a",
                            priority=8323071,
                        ),
                        Candidate(
                            cid="c2",
                            host="proxy.example.org",
                            port=7777,
                            jid="proxy.example.org",
                            priority=655360,
                            type=CandidateType.PROXY,
                        ),
                    ),
                ),
                transport_ns="urn:xmpp:jingle:transports:s5b:1",
                encrypted=Encrypted(transfer_id=TID),
            ),
        ),
    )


def roundtrip(j: Jingle) -> Jingle:
    return parse(ET.fromstring(ET.tostring(build(j))))


@pytest.mark.parametrize(
    "jingle",
    [
        offer(),
        Jingle(
            action=Action.TRANSPORT_REPLACE,
            sid="s1",
            contents=(
                Content(
                    name="file",
                    transport=IBBTransport(sid="i1", block_size=32767),
                    transport_ns="urn:xmpp:jingle:transports:ibb:1",
                ),
            ),
        ),
        Jingle(
            action=Action.TRANSPORT_INFO,
            sid="s1",
            contents=(
                Content(
                    name="file",
                    transport=S5BTransport(sid="t1", candidate_used="c1"),
                    transport_ns="urn:xmpp:jingle:transports:s5b:1",
                ),
            ),
        ),
        Jingle(
            action=Action.SESSION_TERMINATE,
            sid="s1",
            reason=Reason.SECURITY_ERROR,
            reason_text="no matching offer",
        ),
        Jingle(action=Action.SESSION_INFO, sid="s1", info=Received(content="file")),
        Jingle(
            action=Action.SESSION_INFO,
            sid="s1",
            info=Checksum(content="file", hashes=(("sha-512", bytes(64)),)),
        ),
    ],
    ids=lambda j: j.action.value,
)
def test_build_then_parse_is_identity(jingle: Jingle) -> None:
    assert roundtrip(jingle) == jingle


def test_the_offer_hides_nothing_it_should_not_show() -> None:
    text = ET.tostring(build(offer())).decode()
    assert f'transfer-id="{TID.hex()}"' in text
    assert "urn:xfer:jingle:otr:1" in text


def stream_offer() -> Jingle:
    content = offer().content
    assert content is not None
    assert content.description is not None
    description = FileDescription(name=content.description.name, size=None)
    return dataclasses.replace(
        offer(), contents=(dataclasses.replace(content, description=description),)
    )


def test_a_stream_offer_has_no_size_and_no_range() -> None:
    # What the servers see of a stream (spec/jingle.md 3.2): no <size/>.
    built = build(stream_offer())
    text = ET.tostring(built).decode()
    assert "size>" not in text
    assert "range" not in text
    assert f"{TID.hex()}.xfer" in text
    assert roundtrip(stream_offer()) == stream_offer()


def test_a_receiver_from_before_streams_answers_a_stream_bad_request() -> None:
    # The parser of the last release without streams (a frozen copy):
    # a <file/> without <size/> is malformed to it, and it says so at once.
    old = old_module("jingle_wire")
    with pytest.raises(JingleError) as caught:
        old.parse(build(stream_offer()))
    assert caught.value.condition == "bad-request"
    assert old.parse(build(offer())).content.description.size == 1234


def jingle_xml(inner: str = "", **attrs: str) -> ET.Element:
    a = {"action": "session-initiate", "sid": "s1", **attrs}
    attr_text = " ".join(f'{k}="{v}"' for k, v in a.items())
    return ET.fromstring(f'<jingle xmlns="{NS_JINGLE}" {attr_text}>{inner}</jingle>')


FT = 'xmlns="urn:xmpp:jingle:apps:file-transfer:5"'
S5 = 'xmlns="urn:xmpp:jingle:transports:s5b:1"'


@pytest.mark.parametrize(
    ("inner", "attrs", "condition"),
    [
        ("", {"action": "session-dance"}, "feature-not-implemented"),
        ("", {"sid": ""}, "bad-request"),
        ("", {"sid": "x" * 129}, "bad-request"),
        ('<content creator="nobody" name="f"/>', {}, "bad-request"),
        ('<content name="f" senders="all"/>', {}, "bad-request"),
        ('<content creator="initiator"/>', {}, "bad-request"),
        (
            f'<content name="f"><description {FT}><file><name>x</name>'
            "<size>-1</size></file></description></content>",
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><description {FT}><file><name>x</name>'
            "<size>+12</size></file></description></content>",
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><description {FT}><file><name>x</name>'
            "<size/></file></description></content>",
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><description {FT}><file><name>x</name>'
            '<range offset="0"/></file></description></content>',
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><description {FT}><file><name>x</name>'
            "<size>1</size><hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>!!</hash>"
            "</file></description></content>",
            {},
            "bad-request",
        ),
        (f'<content name="f"><description {FT}/></content>', {}, "bad-request"),
        (
            f'<content name="f"><transport {S5} sid="t" mode="udp"/></content>',
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><transport {S5} sid="t"><candidate cid="c" '
            'host="h" jid="j" port="70000" priority="1"/></transport></content>',
            {},
            "bad-request",
        ),
        (
            f'<content name="f"><transport {S5} sid="t"><candidate cid="c" '
            'host="h" jid="j" priority="1" type="teleport"/></transport></content>',
            {},
            "bad-request",
        ),
        (
            '<content name="f"><transport xmlns="urn:xmpp:jingle:transports:ibb:1"'
            ' sid="i" block-size="0"/></content>',
            {},
            "bad-request",
        ),
        (
            '<content name="f"><encrypted xmlns="urn:xfer:jingle:otr:1"'
            ' transfer-id="abcd"/></content>',
            {},
            "bad-request",
        ),
        ("<reason><text>why</text></reason>", {}, "bad-request"),
        ('<content name="f"/>' * 9, {}, "bad-request"),
    ],
)
def test_malformed_is_refused(
    inner: str, attrs: dict[str, str], condition: str
) -> None:
    with pytest.raises(JingleError) as caught:
        parse(jingle_xml(inner, **attrs))
    assert caught.value.condition == condition


def test_unknown_application_and_transport_parse_to_none() -> None:
    j = parse(
        jingle_xml(
            '<content name="f"><description xmlns="urn:example:rtp"/>'
            '<transport xmlns="urn:example:ice"/></content>'
        )
    )
    content = j.content
    assert content is not None
    assert content.description is None
    assert content.application == "urn:example:rtp"
    assert content.transport is None
    assert content.transport_ns == "urn:example:ice"


def test_unknown_reason_reads_as_general_error() -> None:
    j = parse(jingle_xml("<reason><frobnicated/></reason>", action="session-terminate"))
    assert j.reason is Reason.GENERAL_ERROR
