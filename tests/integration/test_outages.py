"""Resume through real outages: the receiver's server restarted mid-transfer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import xfer.xmpp.transfer as transfer_module
from tests.conftest import require_or_skip
from tests.integration.conftest import ACCOUNTS, bob_direct, introduce, through
from tests.integration.test_cli_e2e import Person
from xfer.jingle.wire import NS_JINGLE
from xfer.otr import events as ev
from xfer.otr.fingerprint import format_fingerprint, parse_fingerprint
from xfer.otr.trust import Verification
from xfer.testing.hostile import ForgedOTRPeer, HostileServer, body
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.testing.transports import forcing
from xfer.xmpp.client import XferClient, connect
from xfer.xmpp.transfer import SendResult
from xfer.xmpp.transfer.plugin import FEATURES

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    with LocalProsody(accounts=dict(ACCOUNTS), offline=True) as prosody:
        yield prosody


async def user(
    server: LocalProsody,
    name: str,
    resource: str | None,
    identity: Path,
    clients: list[XferClient],
    **config: object,
) -> XferClient:
    jid = f"{name}@{server.domain}" + ("" if resource is None else f"/{resource}")
    c = await connect(jid, ACCOUNTS[name], "127.0.0.1", server.c2s_port, tls="none")
    clients.append(c)
    c.register_plugin(
        "xfer_transfer",
        {"identity": identity, "connect_timeout": 10.0, **config},
        module=transfer_module,
    )
    return c


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "assigned"])
async def test_the_receivers_server_restarted_mid_transfer(
    server: LocalProsody, tmp_path: Path, clients: list[XferClient], fixed: bool
) -> None:
    """Prosody stops mid-transfer (IBB, through it) and comes back on the
    same port 3 s later: both clients log in again with new server sessions
    (bob under the same resource, or under one the server assigns) and
    alice offers the rest to bob where he is now; the file verifies. The
    figures printed: how long the server was gone (its restart blocks the
    loop until it listens), and the time from then to the first byte of the
    rest."""
    a = await user(server, "alice", "send", tmp_path / "a", clients, **forcing("ibb"))
    b = await user(
        server,
        "bob",
        "recv" if fixed else None,
        tmp_path / "b",
        clients,
        **forcing("ibb"),
    )
    first_full = b.boundjid.full
    introduce(a, b)
    src = tmp_path / "big.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    loop = asyncio.get_running_loop()
    halted = asyncio.Event()
    down: list[float] = []
    back: list[float] = []
    resumed: list[float] = []

    def progress(done: int, total: int | None) -> None:
        if done > 3 * MiB and not halted.is_set():
            halted.set()
        elif back and not resumed:
            resumed.append(loop.time())

    async def outage() -> None:
        await halted.wait()
        server.halt()
        down.append(loop.time())
        await asyncio.sleep(3)
        server.restart()
        back.append(loop.time())

    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    _, got, result = await asyncio.wait_for(
        asyncio.gather(
            outage(),
            receive(),
            a.plugin["xfer_transfer"].send_file(first_full, src, progress=progress),
        ),
        240,
    )
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert result.breaks >= 1
    assert result.peer == b.boundjid.full
    assert (result.peer == first_full) is fixed
    print(
        f"server down {back[0] - down[0]:.2f} s (restart included); back -> "
        f"rest flowing {resumed[0] - back[0]:.2f} s"
    )


async def cut_and_send(
    hostile: HostileServer,
    alice: XferClient,
    bob: XferClient,
    tmp_path: Path,
    on_cut: Callable[[], None],
) -> SendResult:
    """alice sends 8 MiB over IBB to bob; at 2 MiB the hostile server cuts
    her connection (she logs in again, a new session: no stream management
    through it) and ``on_cut`` arms what it does next. The file verifies."""
    introduce(alice, bob)
    src = tmp_path / "doc.bin"
    data = os.urandom(8 * MiB)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()

    def progress(done: int, total: int | None) -> None:
        if done > 2 * MiB and not cut:
            cut.append(hostile.disconnect())
            on_cut()

    cut: list[int] = []

    async def receive() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    got, result = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            alice.plugin["xfer_transfer"].send_file(
                bob.boundjid.full, src, progress=progress
            ),
        ),
        120,
    )
    assert cut
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    return result


async def test_an_offer_of_the_rest_whose_session_initiate_vanishes_is_made_again(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server drops the first offer of the rest (its session-initiate
    is never acknowledged): that attempt times out and counts as one, and
    the next offer of the rest goes through."""
    alice = await through(
        hostile,
        prosody,
        clients,
        tmp_path / "a",
        connect_timeout=3.0,
        resume_backoff=0.2,
        **forcing("ibb"),
    )
    bob = await bob_direct(prosody, clients, tmp_path / "b", **forcing("ibb"))
    initiates: list[ET.Element] = []
    armed: list[bool] = []

    def vanish(_direction: str, element: ET.Element) -> list[ET.Element] | None:
        jingle = element.find(f".//{{{NS_JINGLE}}}jingle")
        if jingle is None or jingle.get("action") != "session-initiate":
            return None
        initiates.append(element)
        if armed and len(initiates) == 2:
            return []  # the first offer of the rest
        return None

    hostile.on_stanza(vanish, "to_server")
    result = await cut_and_send(
        hostile, alice, bob, tmp_path, lambda: armed.append(True)
    )
    assert len(initiates) == 3
    assert result.breaks == 1


async def test_a_bounced_message_is_noticed_and_the_rest_offered_when_the_peer_is_back(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the break the server bounces alice's OTR messages to bob
    twice (service-unavailable, as while his server is down): each bounce
    ends that attempt at once (not after the 10 s OTR wait), and the rest
    goes to bob once his messages pass again."""
    caplog.set_level(logging.INFO, logger="xfer")
    alice = await through(
        hostile,
        prosody,
        clients,
        tmp_path / "a",
        resume_backoff=0.2,
        **forcing("ibb"),
    )
    bob = await bob_direct(prosody, clients, tmp_path / "b", **forcing("ibb"))
    bounced: list[ET.Element] = []
    armed: list[bool] = []
    loop = asyncio.get_running_loop()

    def bounce(_direction: str, element: ET.Element) -> list[ET.Element] | None:
        text = body(element)
        if (
            not armed
            or len(bounced) >= 2
            or text is None
            or not text.startswith("?OTR")
        ):
            return None
        if element.get("to") != bob.boundjid.full:
            return None
        bounced.append(element)
        error = (
            f"<message type='error' from='{bob.boundjid.full}' "
            f"to='{alice.boundjid.full}' id='{element.get('id')}'>"
            "<error type='cancel'>"
            "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>"
        )
        loop.call_soon(hostile.inject_to_client, error)
        return []

    hostile.on_stanza(bounce, "to_server")
    result = await cut_and_send(
        hostile, alice, bob, tmp_path, lambda: armed.append(True)
    )
    assert len(bounced) == 2
    assert result.breaks == 1
    failed = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("offering the rest to")
    ]
    assert len(failed) == 2
    assert all("service-unavailable" in m for m in failed)


async def test_a_resource_the_server_invents_gets_no_offer_of_the_rest(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """bob's client goes away mid-transfer. alice's server then shows her a
    resource bob never had (presence, service discovery and an OTR key
    exchange, all its own): its key is not bob's, so it is offered nothing
    and never asked again, and the rest goes to bob's real client when it
    logs in again under a resource the server assigns."""
    alice = await through(
        hostile,
        prosody,
        clients,
        tmp_path / "a",
        connect_timeout=4.0,
        probe_timeout=1.0,
        resume_backoff=0.2,
        **forcing("ibb"),
    )
    bob = await bob_direct(prosody, clients, tmp_path / "b", **forcing("ibb"))
    introduce(alice, bob)
    evil = f"bob@{prosody.domain}/evil"
    forger = ForgedOTRPeer(hostile, evil, swallow=False)
    disco = "{http://jabber.org/protocol/disco#info}query"

    def answer_disco(_direction: str, element: ET.Element) -> list[ET.Element] | None:
        if element.get("to") != evil or element.find(disco) is None:
            return None
        features = "".join(f"<feature var='{f}'/>" for f in FEATURES)
        hostile.inject_to_client(
            f"<iq type='result' id='{element.get('id')}' from='{evil}'>"
            f"<query xmlns='http://jabber.org/protocol/disco#info'>{features}"
            "</query></iq>"
        )
        return []

    hostile.on_stanza(answer_disco, "to_server")
    src = tmp_path / "doc.bin"
    data = os.urandom(8 * MiB)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    gone = asyncio.Event()

    def progress(done: int, total: int | None) -> None:
        if done > 2 * MiB:
            gone.set()

    async def receive() -> Path:
        first = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        taking = asyncio.ensure_future(first.accept(inbox))
        await gone.wait()
        # (Its receipt would wait for the rest: this client is gone.)
        taking.cancel()
        await bob.stop()
        hostile.inject_to_client(f"<presence from='{evil}'/>")
        await asyncio.sleep(2)
        again = await connect(
            f"bob@{prosody.domain}",
            ACCOUNTS["bob"],
            "127.0.0.1",
            prosody.c2s_port,
            tls="none",
        )
        clients.append(again)
        again.register_plugin(
            "xfer_transfer",
            {"identity": tmp_path / "b", **forcing("ibb")},
            module=transfer_module,
        )
        offer = await again.plugin["xfer_transfer"].next_offer(timeout=60)
        assert offer.peer == alice.boundjid.full
        return await offer.accept(inbox)

    got, result = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            alice.plugin["xfer_transfer"].send_file(
                bob.boundjid.full, src, progress=progress
            ),
        ),
        120,
    )
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert result.peer not in (bob.boundjid.full, evil)
    assert result.resumed_from > 0
    # The forger went secure with alice, and got no offer.
    assert forger.events_of(ev.GoneSecure)
    assert forger.offers() == []
    forger.close()


async def test_the_command_line_sender_resumes_after_a_server_restart(
    server: LocalProsody, tmp_path: Path, clients: list[XferClient]
) -> None:
    """``xfer send --to bob@...`` (a real process: it resolves bob's full
    JID and sends to it) while Prosody restarts under both; bob logs in again
    under a resource the server assigns, and the rest goes there."""
    bob = await user(server, "bob", None, tmp_path / "b", clients, **forcing("ibb"))
    first_full = bob.boundjid.full
    alice = Person("alice", server, tmp_path)
    alice.env["XFER_JID"] = f"alice@{server.domain}"
    assert (
        alice.run(
            "trust",
            bob.boundjid.bare,
            format_fingerprint(
                bob.plugin["xfer_otr"].account.private_key.public.fingerprint
            ),
        ).returncode
        == 0
    )
    otr = bob.plugin["xfer_otr"]
    otr.trust.trust(
        alice.jid, parse_fingerprint(alice.fingerprint()), Verification.MANUAL, now=0
    )
    src = tmp_path / "film.bin"
    data = os.urandom(16 * MiB)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()
    halted = asyncio.Event()

    def progress(done: int, total: int | None) -> None:
        if done > 3 * MiB:
            halted.set()

    async def receive() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox, progress=progress)

    sender = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xfer_cli",
        "send",
        str(src),
        "--to",
        bob.boundjid.bare,
        "--no-local-addresses",
        "--json",
        env=alice.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        receiving = asyncio.ensure_future(receive())
        await asyncio.wait_for(halted.wait(), 60)
        server.halt()
        await asyncio.sleep(3)
        server.restart()
        got = await asyncio.wait_for(receiving, 120)
        out, err = await asyncio.wait_for(sender.communicate(), 60)
    finally:
        if sender.returncode is None:
            sender.kill()
            await sender.wait()
    assert sender.returncode == 0, err.decode()
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert bob.boundjid.full != first_full
    sent = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    (done,) = [e for e in sent if e["event"] == "sent"]
    assert done["peer"] == bob.boundjid.full
    assert isinstance(done["breaks"], int)
    assert done["breaks"] >= 1
