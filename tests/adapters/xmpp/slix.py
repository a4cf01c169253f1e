"""slixmpp's ``SlixTest`` made to fit this project's pytest.

``SlixTest`` drives a client over a mock transport: stanzas in with
:meth:`recv`, stanzas out checked with :meth:`send`; no server, no network.
Two things do not fit as shipped, and :class:`StanzaCase` fixes them:

* it runs everything on ``asyncio.get_event_loop()``, a loop nobody closes;
  here each test gets a new loop, set as current for the test and closed
  after it (pending tasks cancelled first), so nothing leaks into the
  pytest-asyncio tests that run next;
* its ``TestSocket`` opens a real (never connected) socket and never closes
  it: under ``filterwarnings = error`` the ResourceWarning fails the run.

The tests are plain ``unittest`` methods, so ``asyncio_mode = auto`` leaves
them alone; a coroutine runs with :meth:`run_coro`, or as a task with
:meth:`start` while the test feeds it stanzas.

Where the code under test opens real sockets (SOCKS5 on loopback), the test
registers what to close with :meth:`StanzaCase.closing`; it runs before the
loop closes, so no socket outlives its test. :meth:`StanzaCase.streamhost`
is a peer's (or a proxy's) real SOCKS5 streamhost on 127.0.0.1.

:class:`TransferCase` loads ``xfer_transfer`` with its sibling plugins and
plays the peer from the test: its OTR is a real
:class:`xfer.otr.account.Account`, its Jingle, IBB and SOCKS5 are stanzas
and sockets the test writes; what our client sends is sorted by
:meth:`TransferCase.pump` (OTR to the peer's account, the rest kept for the
test to take).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from xml.sax.saxutils import escape

from slixmpp.test import SlixTest, TestTransport

import xfer.xmpp.ibb as ibb_plugin
import xfer.xmpp.jingle as jingle_plugin
import xfer.xmpp.otr as otr_plugin
import xfer.xmpp.socks5 as socks5_plugin
import xfer.xmpp.transfer as transfer_plugin
from tests.helpers import make_offer
from xfer.aio.socks5 import Socks5Listener
from xfer.envelope import Sealer
from xfer.errors import ConnectionFailed
from xfer.framing.ibb import NS as NS_IBB_STREAM
from xfer.jingle import Action, Role
from xfer.jingle.files import FileDescription, Range
from xfer.jingle.wire import (
    NS_FILE_TRANSFER,
    NS_JINGLE,
    Content,
    Encrypted,
    IBBTransport,
    Jingle,
    S5BTransport,
    build,
    parse,
)
from xfer.otr import Policy
from xfer.otr import events as ev
from xfer.otr.account import Account
from xfer.otr.crypto import PrivateKey
from xfer.otr.trust import TrustStore, Verification
from xfer.transfer.offer import (
    XFER_USE,
    TransferDigest,
    TransferOffer,
    TransferVerdict,
    decode_payload,
    envelope_header,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import ModuleType

    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.aio.tcp import TcpConnection
    from xfer.otr.session import Session

T = TypeVar("T")

#: The JID ``stream_start`` binds.
ME = "tester@localhost/resource"
PEER = "peer@example.org/laptop"


def result(iq_id: str, payload: str = "", *, frm: str = PEER) -> str:
    """An IQ result from ``frm`` to us, with ``payload`` (XML) if any."""
    return f'<iq type="result" id="{iq_id}" from="{frm}" to="{ME}">{payload}</iq>'


def iq_error(
    iq_id: str, condition: str, *, frm: str = PEER, etype: str = "cancel"
) -> str:
    """An IQ error from ``frm`` with the RFC 6120 ``condition``."""
    return (
        f'<iq type="error" id="{iq_id}" from="{frm}" to="{ME}">'
        f'<error type="{etype}"><{condition} '
        f'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
    )


class Transport(TestTransport):  # type: ignore[misc]
    """The mock transport, with what xfer's direct writes ask of a real one."""

    closing = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closing = True


class StanzaCase(SlixTest):  # type: ignore[misc]
    """A SlixTest client with the plugins in :attr:`plugins` registered.

    ``plugins`` holds ``(name, module, config)``; slixmpp's built-in plugins
    are not loaded unless listed.
    """

    plugins: ClassVar[tuple[tuple[str, ModuleType | None, dict[str, Any]], ...]] = ()

    def setUp(self) -> None:
        self._closers: list[Callable[[], object]] = []
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stream_start(plugins=[])
        self.xmpp.transport.__class__ = Transport
        for name, module, config in self.plugins:
            self.xmpp.register_plugin(name, config, module=module)

    def tearDown(self) -> None:
        for close in reversed(self._closers):
            close()
        if self._closers:
            self.wait_(0.01)  # let aborted transports close their sockets
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.stream_close()
        self.xmpp.socket.socket.close()
        self.loop.close()
        asyncio.set_event_loop(None)

    def plugin(self, name: str) -> Any:
        return self.xmpp.plugin[name]

    def closing(self, close: Callable[[], object]) -> None:
        """Call ``close`` at the end of the test, before the loop closes."""
        self._closers.append(close)

    def keep(self, connection: T) -> T:
        """A connection (anything with ``abort()``) aborted after the test."""
        self.closing(connection.abort)  # type: ignore[attr-defined]
        return connection

    def streamhost(
        self, address: bytes
    ) -> tuple[int, asyncio.Future[TcpConnection], Socks5Listener]:
        """A real SOCKS5 streamhost on 127.0.0.1 (a peer's, or a proxy)
        that lets in one connection for ``address``: its port, the future
        of that connection, and the listener (closed after the test)."""
        listener = Socks5Listener(handshake_timeout=lambda: 5.0)
        self.closing(lambda: listener.close(ConnectionFailed("the test is over")))
        _, port = self.run_coro(listener.listen("127.0.0.1"))
        return port, self.expect_at(listener, address), listener

    def expect_at(
        self, listener: Socks5Listener, address: bytes
    ) -> asyncio.Future[TcpConnection]:
        """The next connection to ``listener`` for ``address`` (aborted
        after the test)."""

        async def expect() -> asyncio.Future[TcpConnection]:
            return listener.expect(address)

        waiter = self.run_coro(expect())

        def close() -> None:
            if waiter.done() and not waiter.cancelled() and not waiter.exception():
                waiter.result().abort()

        self.closing(close)
        return waiter

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task and let it get as far as it can."""
        task = self.loop.create_task(coro)
        self.wait_()
        return task

    def until(self, done: Callable[[], object], timeout: float = 10) -> None:
        """Run the loop until ``done()`` holds (work in a thread, say)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                self.fail("timed out waiting")
            self.wait_(0.005)

    def until_sent(self, timeout: float = 10) -> None:
        """Run the loop until the client sent something (after real I/O)."""

        def sent() -> bool:
            self.wait_for_send_queue()
            return not self.xmpp.socket.send_queue.empty()

        self.until(sent, timeout)

    def sent(self) -> StanzaBase:
        """The next stanza the client sent, as a slixmpp stanza object."""
        self.wait_for_send_queue()
        raw = self.xmpp.socket.next_sent()
        if raw is None:
            self.fail("no stanza was sent")
        xml = self.parse_xml(raw)
        self.fix_namespaces(xml)
        return self.xmpp._build_stanza(xml)

    def all_sent(self) -> list[StanzaBase]:
        """Every stanza sent and not yet taken."""
        out = []
        self.wait_for_send_queue()
        while not self.xmpp.socket.send_queue.empty():
            out.append(self.sent())
        return out

    def nothing_sent(self) -> None:
        self.wait_for_send_queue()
        raw = self.xmpp.socket.next_sent()
        assert raw is None, "a stanza was sent"


# -- a scripted peer for xfer_transfer --------------------------------------------

_KEYS: list[PrivateKey] = []


def otr_keys() -> tuple[PrivateKey, PrivateKey]:
    """Our long-term OTR key and the peer's (made once: DSA takes a while)."""
    if not _KEYS:
        _KEYS.extend(PrivateKey.generate() for _ in range(2))
    return _KEYS[0], _KEYS[1]


def jingle_iq(jingle: Jingle, iq_id: str, *, frm: str = PEER) -> str:
    """A Jingle request from ``frm``."""
    payload = ET.tostring(build(jingle), encoding="unicode")
    return f'<iq type="set" id="{iq_id}" from="{frm}" to="{ME}">{payload}</iq>'


def file_offer(
    content: bytes, name: str = "report.txt", *, version: int = 2
) -> TransferOffer:
    """The private half of an offer of ``content`` (4 KiB chunks): version 2
    (a file id; the digest follows the data, :meth:`TransferCase.peer_digest`)
    or version 1 (the SHA-256 up front). The file id is one per content and
    name, as a sender's is one per unchanged file."""
    if version == 1:
        return make_offer(
            chunk_size=4096,
            size=len(content),
            sha256=hashlib.sha256(content).digest(),
            name=name,
        )
    return make_offer(
        chunk_size=4096,
        size=len(content),
        file_id=hashlib.sha256(b"id:" + name.encode() + content).digest(),
        name=name,
    )


def digest_of(offer: TransferOffer, content: bytes) -> TransferDigest:
    """The sender's digest of ``offer``: the SHA-256 of the whole ``content``."""
    return TransferDigest(
        transfer_id=offer.transfer_id,
        sha256=hashlib.sha256(content).digest(),
        size=len(content),
    )


def sealed_size(offer: TransferOffer) -> int:
    return envelope_header(offer).sealed_size(offer.size)


def seal(offer: TransferOffer, key: bytes, content: bytes) -> bytes:
    """The sealed stream of ``content`` under the key of ``offer``."""
    sealer = Sealer.announced(
        key,
        salt=offer.salt,
        transfer_id=offer.transfer_id,
        chunk_size=offer.chunk_size,
    )
    return sealer.update(content) + sealer.finalize()


def initiate(
    offer: TransferOffer,
    transport: S5BTransport | IBBTransport | None,
    *,
    sid: str = "j1",
    size: int | None = None,
    encrypted: bool = True,
    resumable: bool = True,
    extra: tuple[Content, ...] = (),
) -> Jingle:
    """The peer's session-initiate for ``offer`` (what the servers see)."""
    description = FileDescription(
        name=f"{offer.transfer_id.hex()}.xfer",
        size=sealed_size(offer) if size is None else size,
        range=Range() if resumable else None,
    )
    content = Content(
        name="file",
        creator=Role.INITIATOR,
        senders="initiator",
        description=description,
        application=NS_FILE_TRANSFER,
        transport=transport,
        encrypted=Encrypted(transfer_id=offer.transfer_id) if encrypted else None,
    )
    return Jingle(
        action=Action.SESSION_INITIATE,
        sid=sid,
        initiator=PEER,
        contents=(content, *extra),
    )


def transport_info(transport: S5BTransport, *, sid: str = "j1") -> Jingle:
    """The peer's transport-info for session ``sid``."""
    return Jingle(
        action=Action.TRANSPORT_INFO,
        sid=sid,
        contents=(Content(name="file", transport=transport),),
    )


class TransferCase(StanzaCase):
    """``xfer_transfer`` with its sibling plugins, against a scripted peer.

    ``settings`` overrides the plugin's configuration (short timeouts by
    default; no server proxy, whose discovery would need answers). The peer's
    fingerprint is trusted unless ``trusted`` is false.
    """

    settings: ClassVar[dict[str, Any]] = {}
    trusted: ClassVar[bool] = True

    def setUp(self) -> None:
        ours, theirs = otr_keys()
        self.trust = TrustStore()
        self.their_fingerprint = theirs.public.fingerprint
        if self.trusted:
            self.trust.trust(PEER, self.their_fingerprint, Verification.MANUAL, now=0)
        self.plugins = (
            ("xep_0030", None, {}),
            ("xep_0199", None, {}),
            (
                "xfer_otr",
                otr_plugin,
                {
                    "private_key": ours,
                    "instance_tag": 0x1111_1111,
                    "trust_store": self.trust,
                },
            ),
            (
                "xfer_socks5",
                socks5_plugin,
                {"connect_timeout": 5.0, "idle_timeout": 5.0},
            ),
            ("xfer_ibb", ibb_plugin, {"idle_timeout": 5.0}),
            ("xfer_xep_0166", jingle_plugin, {}),
            (
                "xfer_transfer",
                transfer_plugin,
                {
                    "socks5_proxy": False,
                    # No real XMPP connection to tell that the "peer" is on
                    # this host: its streamhosts are on 127.0.0.1.
                    "loopback": True,
                    "connect_timeout": 5.0,
                    "offer_timeout": 5.0,
                    "otr_offer_wait": 2.0,
                    "stall_timeout": 5.0,
                    "resume_attempts": 0,
                    "resume_wait": 0.5,
                    "resume_backoff": 0.01,
                    **self.settings,
                },
            ),
        )
        super().setUp()
        self.transfer = self.plugin("xfer_transfer")
        self.otr = self.plugin("xfer_otr")
        self.closing(lambda: self.plugin("xfer_socks5")._on_disconnected(None))
        self.peer = Account(theirs, our_tag=0x2222_2222, policy=Policy())
        #: What the peer's account made of our OTR messages.
        self.peer_events: list[ev.Event] = []
        #: Other OTR accounts under the peer's JID (another key, another
        #: instance tag) that get our OTR messages too.
        self.others: list[Account] = []
        #: Our other stanzas, not yet taken by the test.
        self.outbox: list[StanzaBase] = []
        #: The ids of our OTR messages to the peer, in order.
        self.otr_ids: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="xfer-test-"))
        self.addCleanup(shutil.rmtree, self.dir, True)

    # -- what we send ------------------------------------------------------------

    def pump(self) -> None:
        """Sort what we sent: OTR messages to the peer, the rest to the outbox."""
        self.wait_for_send_queue()
        while (raw := self.xmpp.socket.next_sent()) is not None:
            xml = self.parse_xml(raw)
            self.fix_namespaces(xml)
            stanza = self.xmpp._build_stanza(xml)
            body = stanza["body"] if stanza.name == "message" else ""
            if body.startswith("?OTR"):
                assert stanza["to"].full == PEER
                self.otr_ids.append(stanza["id"])
                self.peer_events += self.peer.receive(ME, body)[1]
                for other in self.others:
                    other.receive(ME, body)
            else:
                self.outbox.append(stanza)

    def take(
        self, wanted: Callable[[StanzaBase], bool], timeout: float = 10
    ) -> StanzaBase:
        """The first stanza we sent that ``wanted`` accepts (waiting for it)."""
        found: list[StanzaBase] = []

        def look() -> bool:
            self.pump()
            for stanza in self.outbox:
                if wanted(stanza):
                    self.outbox.remove(stanza)
                    found.append(stanza)
                    return True
            return False

        self.until(look, timeout)
        return found[0]

    def next_jingle(
        self, action: Action | None = None, timeout: float = 10
    ) -> tuple[StanzaBase, Jingle]:
        """Our next Jingle request (of ``action``), parsed."""

        def wanted(stanza: StanzaBase) -> bool:
            if stanza.name != "iq" or stanza["type"] != "set":
                return False
            el = stanza.xml.find(f"{{{NS_JINGLE}}}jingle")
            return el is not None and (
                action is None or el.get("action") == action.value
            )

        iq = self.take(wanted, timeout)
        assert iq["to"].full == PEER
        el = iq.xml.find(f"{{{NS_JINGLE}}}jingle")
        assert el is not None
        return iq, parse(el)

    def answered(self, iq_id: str, timeout: float = 10) -> StanzaBase:
        """Our answer (result or error) to the peer's request ``iq_id``."""
        return self.take(
            lambda s: (
                s.name == "iq" and s["id"] == iq_id and s["type"] in ("result", "error")
            ),
            timeout,
        )

    def ack(self, iq: StanzaBase) -> None:
        """The peer acknowledges our request ``iq``."""
        self.recv(result(iq["id"]))

    def peer_says(self, jingle: Jingle, iq_id: str) -> StanzaBase:
        """The peer sends a Jingle request; our answer to it."""
        self.recv(jingle_iq(jingle, iq_id))
        return self.answered(iq_id)

    def verdicts(self) -> list[TransferVerdict]:
        """The verdicts that reached the peer inside OTR."""
        self.pump()
        return [got for got, _ in self._payloads() if isinstance(got, TransferVerdict)]

    def digests(self) -> list[TransferDigest]:
        """The digests that reached the peer inside OTR."""
        self.pump()
        return [got for got, _ in self._payloads() if isinstance(got, TransferDigest)]

    def _payloads(
        self,
    ) -> list[tuple[TransferOffer | TransferVerdict | TransferDigest, bytes]]:
        """xfer's TLV 8 payloads that reached the peer, with their keys."""
        return [
            (decode_payload(e.data), e.key)
            for e in self.peer_events
            if isinstance(e, ev.SymmetricKeyReceived) and e.use == XFER_USE
        ]

    # -- OTR ----------------------------------------------------------------------

    def from_peer(self) -> int:
        """Deliver the peer's queued OTR messages; how many."""
        out = self.peer.data_to_send()
        for to, body in out:
            assert to == ME
            self.recv(
                f'<message type="chat" from="{PEER}" to="{ME}">'
                f"<body>{escape(body)}</body></message>"
            )
        return len(out)

    def relay(self) -> None:
        """OTR both ways until both sides are quiet."""
        for _ in range(10):
            self.pump()
            if not self.from_peer():
                self.pump()
                return

    def peer_session(self) -> Session:
        session = self.peer.best(ME)
        assert session is not None
        return session

    def secure(self) -> None:
        """The peer starts OTR with us; both sides end up encrypted."""
        self.peer.session(ME).start_ake()
        self.relay()
        ours = self.otr.session(PEER)
        assert ours is not None
        assert ours.their_fingerprint == self.their_fingerprint

    def offer_inside_otr(self, offer: TransferOffer) -> bytes:
        """The peer sends the private half of ``offer`` in TLV 8; its key."""
        key = self.peer_session().extra_symmetric_key(XFER_USE, offer.encode())
        self.from_peer()
        return key

    # -- IBB ----------------------------------------------------------------------

    def ibb_send(
        self,
        sid: str,
        data: bytes,
        block: int,
        *,
        prefix: str = "d",
        opening: bool = True,
        closing: bool = True,
    ) -> None:
        """The peer opens IBB stream ``sid``, sends ``data`` and closes it
        (or only some of that), each request acknowledged by us."""
        if opening:
            self.recv(
                f'<iq type="set" id="{prefix}-open" from="{PEER}" to="{ME}">'
                f'<open xmlns="{NS_IBB_STREAM}" sid="{sid}" block-size="{block}" '
                'stanza="iq"/></iq>'
            )
            assert self.answered(f"{prefix}-open")["type"] == "result"
        for seq, at in enumerate(range(0, len(data), block)):
            text = base64.b64encode(data[at : at + block]).decode()
            self.recv(
                f'<iq type="set" id="{prefix}-{seq}" from="{PEER}" to="{ME}">'
                f'<data xmlns="{NS_IBB_STREAM}" sid="{sid}" seq="{seq}">{text}'
                "</data></iq>"
            )
            assert self.answered(f"{prefix}-{seq}")["type"] == "result"
        if closing:
            self.recv(
                f'<iq type="set" id="{prefix}-close" from="{PEER}" to="{ME}">'
                f'<close xmlns="{NS_IBB_STREAM}" sid="{sid}"/></iq>'
            )
            assert self.answered(f"{prefix}-close")["type"] == "result"

    def ibb_receive(self, sid: str) -> tuple[int, bytes]:
        """The IBB stream ``sid`` we open to the peer, acknowledged request
        by request until we close it: its block size and the data."""

        def ours(stanza: StanzaBase) -> bool:
            if stanza.name != "iq" or stanza["type"] != "set":
                return False
            return any(
                child.get("sid") == sid
                for child in stanza.xml
                if child.tag.startswith(f"{{{NS_IBB_STREAM}}}")
            )

        opened = self.take(ours)
        el = opened.xml.find(f"{{{NS_IBB_STREAM}}}open")
        assert el is not None, "the stream did not start with an open"
        block = int(el.get("block-size", "0"))
        self.ack(opened)
        data = bytearray()
        while True:
            iq = self.take(ours)
            self.ack(iq)
            if iq.xml.find(f"{{{NS_IBB_STREAM}}}close") is not None:
                return block, bytes(data)
            piece = iq.xml.find(f"{{{NS_IBB_STREAM}}}data")
            assert piece is not None
            chunk = base64.b64decode(piece.text or "")
            assert 0 < len(chunk) <= block
            data += chunk

    def offers_to_peer(self) -> list[tuple[TransferOffer, bytes]]:
        """The offers that reached the peer inside OTR, with their keys."""
        self.pump()
        return [
            (got, key)
            for got, key in self._payloads()
            if isinstance(got, TransferOffer)
        ]

    def peer_verdict(self, verdict: TransferVerdict) -> None:
        """The peer sends its verdict inside OTR."""
        self.peer_session().extra_symmetric_key(XFER_USE, verdict.encode())
        self.from_peer()

    def peer_digest(self, offer: TransferOffer, content: bytes) -> None:
        """The peer, as the sender, sends its digest of ``content`` (the
        whole file) for ``offer`` inside OTR, after the data."""
        digest = digest_of(offer, content)
        self.peer_session().extra_symmetric_key(XFER_USE, digest.encode())
        self.from_peer()
