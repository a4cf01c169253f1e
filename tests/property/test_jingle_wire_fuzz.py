"""Any XML under <jingle/> parses or raises JingleError: never anything else."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from xfer.jingle import JingleError
from xfer.jingle.wire import NS_ENCRYPTED, NS_IBB, NS_JINGLE, NS_S5B, parse

NAMES = [
    f"{{{NS_JINGLE}}}content",
    f"{{{NS_JINGLE}}}reason",
    f"{{{NS_JINGLE}}}text",
    f"{{{NS_JINGLE}}}decline",
    "{urn:xmpp:jingle:apps:file-transfer:5}description",
    "{urn:xmpp:jingle:apps:file-transfer:5}file",
    "{urn:xmpp:jingle:apps:file-transfer:5}name",
    "{urn:xmpp:jingle:apps:file-transfer:5}size",
    "{urn:xmpp:jingle:apps:file-transfer:5}range",
    "{urn:xmpp:jingle:apps:file-transfer:5}received",
    "{urn:xmpp:jingle:apps:file-transfer:5}checksum",
    "{urn:xmpp:hashes:2}hash",
    f"{{{NS_S5B}}}transport",
    f"{{{NS_S5B}}}candidate",
    f"{{{NS_S5B}}}candidate-used",
    f"{{{NS_S5B}}}activated",
    f"{{{NS_IBB}}}transport",
    f"{{{NS_ENCRYPTED}}}encrypted",
    "{urn:example}other",
]
ATTRS = [
    "action",
    "sid",
    "name",
    "creator",
    "senders",
    "cid",
    "host",
    "port",
    "jid",
    "priority",
    "type",
    "block-size",
    "transfer-id",
    "algo",
    "offset",
    "length",
    "mode",
    "initiator",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "session-initiate",
            "session-terminate",
            "session-info",
            "transport-info",
            "initiator",
            "responder",
            "both",
            "tcp",
            "direct",
            "proxy",
            "0",
            "1",
            "65535",
            "65536",
            "-1",
            "sha-256",
            "00" * 16,
            "x" * 200,
        ]
    ),
    st.text(max_size=20),
)


def elements(depth: int = 3) -> st.SearchStrategy[ET.Element]:
    def make(
        tag: str, attrs: dict[str, str], text: str | None, children: list[ET.Element]
    ) -> ET.Element:
        el = ET.Element(tag, attrs)
        el.text = text
        el.extend(children)
        return el

    leaf = st.builds(
        make,
        st.sampled_from(NAMES),
        st.dictionaries(st.sampled_from(ATTRS), VALUES, max_size=4),
        st.one_of(st.none(), VALUES),
        st.just([]),
    )
    if depth == 0:
        return leaf
    return st.builds(
        make,
        st.sampled_from(NAMES),
        st.dictionaries(st.sampled_from(ATTRS), VALUES, max_size=4),
        st.one_of(st.none(), VALUES),
        st.lists(elements(depth - 1), max_size=4),
    )


@given(
    attrs=st.dictionaries(st.sampled_from(ATTRS), VALUES, max_size=5),
    children=st.lists(elements(), max_size=4),
)
def test_parse_raises_only_jingle_errors(
    attrs: dict[str, str], children: list[ET.Element]
) -> None:
    root = ET.Element(f"{{{NS_JINGLE}}}jingle", attrs)
    root.extend(children)
    with contextlib.suppress(JingleError):
        parse(root)
