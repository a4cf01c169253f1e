"""A hostile server against the states of resume and of throttled IBB.

alice (the sender) connects through the hostile server; bob straight to
Prosody. The server forges bounces of alice's OTR messages that it did
deliver; withholds, forges, replays and reorders the acknowledgements of
her IBB data; floods her with presence in bob's name after a break. Whatever
it does: the OTR session keeps working, forged bounces cost at most one of
the bounded attempts each, the pacing window never grows past its bound,
a real stall is still noticed, and nothing is stored that did not verify.
"""

from __future__ import annotations

import asyncio
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import (
    bob_direct,
    introduce,
    through,
    transfer_client,
)
from xfer.errors import TransferTimeout, XferError
from xfer.testing.faults import FaultProxy
from xfer.testing.hostile import HostileServer, body

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from xfer.testing.prosody import LocalProsody
    from xfer.xmpp.client import XferClient
    from xfer.xmpp.transfer import SendResult

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

KiB = 1024
NS_IBB = "http://jabber.org/protocol/ibb"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: IBB only, from the start (no SOCKS5 attempts), small blocks.
IBB: dict[str, object] = {
    "socks5_direct": False,
    "socks5_proxy": False,
    "ibb_block_size": 8192,
}
STALL = 2.0
#: How long a side that gave up waits for its session-terminate to be
#: acknowledged before it returns (the old wait: 10 s).
TERMINATE_WAIT = 1.0
INITIATE = ".//{urn:xmpp:jingle:1}jingle[@action='session-initiate']"


def bounce_of(element: ET.Element, condition: str = "service-unavailable") -> str:
    """The error a server sends back for ``element`` (a message it could
    not deliver): same id, from the JID it went to."""
    return (
        f"<message type='error' id='{element.get('id')}' "
        f"from='{element.get('to')}' to='{element.get('from') or ''}'>"
        f"<error type='cancel'><{condition} xmlns='{NS_STANZAS}'/></error></message>"
    )


def is_otr(element: ET.Element) -> bool:
    text = body(element)
    return text is not None and text.startswith("?OTR")


def ibb_data(element: ET.Element) -> bool:
    return element.find(f"{{{NS_IBB}}}data") is not None


def ibb_ack(element: ET.Element) -> bool:
    """bob's answer to one of alice's IBB packets."""
    return (
        element.tag.endswith("}iq")
        and element.get("type") == "result"
        and (element.get("id") or "").startswith("xibb-")
    )


async def pair(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    **config: object,
) -> tuple[XferClient, XferClient]:
    settings = {"connect_timeout": 3.0, "resume_backoff": 0.2, **config}
    alice = await through(hostile, prosody, clients, tmp_path / "a", **settings)
    bob = await bob_direct(prosody, clients, tmp_path / "b", **settings)
    introduce(alice, bob)
    return alice, bob


async def transfer(
    alice: XferClient,
    bob: XferClient,
    tmp_path: Path,
    size: int,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60,
) -> tuple[Path | BaseException, SendResult | BaseException, bytes]:
    """alice sends ``size`` random bytes to bob, who accepts; both
    outcomes (a failure as the exception) and the data."""
    src = tmp_path / "doc.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    inbox = tmp_path / "in"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    sending = alice.plugin["xfer_transfer"].send_file(
        bob.boundjid.full, src, progress=progress or (lambda _d, _t: None)
    )
    got, result = await asyncio.wait_for(
        asyncio.gather(receive(), sending, return_exceptions=True), timeout
    )
    assert not isinstance(got, asyncio.CancelledError)
    assert not isinstance(result, asyncio.CancelledError)
    return got, result, data


def stored_nothing_but(inbox: Path, data: bytes) -> None:
    """Every file in bob's inbox is the file sent (partial receipts, kept
    for a resume, live in their own hidden place and hold verified data)."""
    for path in inbox.iterdir():
        if path.is_file() and not path.name.startswith("."):
            assert path.read_bytes() == data, path


# -- (a) forged bounces ------------------------------------------------------------


async def test_forged_bounces_of_delivered_messages_do_not_end_a_working_transfer(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """Once bob took the offer, the server delivers every OTR message of
    alice's (the digest among them) and forges a bounce of each, with its
    id; plus bounces in bob's name for messages never sent and bounces in
    another account's name. The transfer goes on undisturbed."""
    alice, bob = await pair(prosody, hostile, clients, tmp_path, **IBB)
    started: list[bool] = []
    forged: list[str] = []
    loop = asyncio.get_running_loop()

    def forge(_direction: str, element: ET.Element) -> None:
        if started and is_otr(element):
            for text in (
                bounce_of(element),
                bounce_of(element).replace(element.get("id") or "", "n0t-0urs"),
                bounce_of(element).replace(
                    f"from='{element.get('to')}'",
                    f"from='carol@{prosody.domain}/c'",
                ),
            ):
                forged.append(text)
                loop.call_soon(hostile.inject_to_client, text)
        return None  # delivered all the same

    hostile.on_stanza(forge, "to_server")
    got, result, data = await transfer(
        alice,
        bob,
        tmp_path,
        96 * KiB,
        progress=lambda done, _t: started.append(True) if done else None,
    )
    assert isinstance(got, Path), got
    assert not isinstance(result, BaseException), result
    assert got.read_bytes() == data
    assert result.breaks == 0
    assert forged  # the digest at least was "bounced"


async def test_forged_bounces_of_delivered_offers_of_the_rest_cost_one_attempt_each(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """After a break, the server delivers alice's OTR messages to bob but
    forges a bounce of the first two: each ends its attempt (it cannot be
    told from a real bounce), the OTR session survives it (the next offer
    goes through without a new key exchange failing), and the rest is
    offered and verifies."""
    alice, bob = await pair(
        prosody, hostile, clients, tmp_path, resume_attempts=4, **IBB
    )
    cut: list[int] = []
    bounced: list[ET.Element] = []
    loop = asyncio.get_running_loop()

    def forge(_direction: str, element: ET.Element) -> None:
        if cut and len(bounced) < 2 and is_otr(element):
            bounced.append(element)
            loop.call_soon(hostile.inject_to_client, bounce_of(element))
        return None

    hostile.on_stanza(forge, "to_server")

    def progress(done: int, _total: int | None) -> None:
        if done > 256 * KiB and not cut:
            cut.append(hostile.disconnect())

    got, result, data = await transfer(alice, bob, tmp_path, 640 * KiB, progress)
    assert isinstance(got, Path), got
    assert not isinstance(result, BaseException), result
    assert got.read_bytes() == data
    assert len(bounced) == 2
    assert result.breaks == 1
    # The whole chunks bob verified before the break were kept.
    assert result.resumed_from > 0


async def test_bounces_of_messages_never_sent_or_in_anothers_name_cost_nothing(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a break, for each OTR message alice sends, the server forges
    errors that name no message of hers, or name hers but come in another
    account's name: none of them ends an attempt; the first offer of the
    rest goes through."""
    caplog.set_level(logging.INFO, logger="xfer")
    alice, bob = await pair(prosody, hostile, clients, tmp_path, **IBB)
    cut: list[int] = []
    forged: list[str] = []
    loop = asyncio.get_running_loop()

    def forge(_direction: str, element: ET.Element) -> None:
        if cut and is_otr(element):
            real = bounce_of(element)
            for text in (
                real.replace(element.get("id") or "", os.urandom(12).hex()),
                real.replace(f"id='{element.get('id')}' ", ""),
                real.replace(
                    f"from='{element.get('to')}'", f"from='carol@{prosody.domain}'"
                ),
            ):
                forged.append(text)
                loop.call_soon(hostile.inject_to_client, text)
        return None

    hostile.on_stanza(forge, "to_server")

    def progress(done: int, _total: int | None) -> None:
        if done > 256 * KiB and not cut:
            cut.append(hostile.disconnect())

    got, result, data = await transfer(alice, bob, tmp_path, 640 * KiB, progress)
    assert isinstance(got, Path), got
    assert not isinstance(result, BaseException), result
    assert got.read_bytes() == data
    assert forged
    assert result.breaks == 1
    failed = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("offering the rest to")
    ]
    assert failed == []


async def test_forged_bounces_of_every_offer_of_the_rest_give_up_after_the_bound(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server forges a bounce of every OTR message alice sends after a
    break (and delivers them): she gives up after her bounded attempts,
    saying how many; bob stores nothing that did not verify."""
    attempts = 2
    alice, bob = await pair(
        prosody,
        hostile,
        clients,
        tmp_path,
        resume_attempts=attempts,
        resume_wait=20.0,
        **IBB,
    )
    cut: list[int] = []
    bounced: list[ET.Element] = []
    initiates: list[ET.Element] = []
    loop = asyncio.get_running_loop()

    def forge(_direction: str, element: ET.Element) -> None:
        if not cut:
            return None
        if is_otr(element):
            bounced.append(element)
            loop.call_soon(hostile.inject_to_client, bounce_of(element))
        elif element.find(INITIATE) is not None:
            initiates.append(element)
        return None

    hostile.on_stanza(forge, "to_server")

    def progress(done: int, _total: int | None) -> None:
        if done > 256 * KiB and not cut:
            cut.append(hostile.disconnect())

    got, result, data = await transfer(alice, bob, tmp_path, 640 * KiB, progress)
    assert isinstance(result, XferError)
    assert f"gave up after {attempts} attempts" in str(result)
    assert bounced
    assert len(initiates) <= attempts
    stored_nothing_but(tmp_path / "in", data)
    if isinstance(got, Path):  # (only if it verified)
        assert got.read_bytes() == data


# -- (b) withheld, forged, replayed and reordered IBB acknowledgements ------------


async def test_withheld_ibb_acknowledgements_are_a_stall_and_hold_little(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server delivers alice's IBB data to bob but keeps bob's
    acknowledgements from her: her window stops (no more than a window of
    packets is ever unanswered) and her stall timeout fires, long before
    IBB's own minute-long wait for acknowledgements."""
    alice, bob = await pair(
        prosody, hostile, clients, tmp_path, stall_timeout=2.0, resume_attempts=0, **IBB
    )
    window = alice.plugin["xfer_ibb"].config["window"]
    held = hostile.hold(ibb_ack, "to_client")
    loop = asyncio.get_running_loop()
    start = loop.time()
    got, result, data = await transfer(alice, bob, tmp_path, 512 * KiB, timeout=40)
    took = loop.time() - start
    # alice's stall timeout, or bob's (who got a window, then nothing).
    assert isinstance(result, TransferTimeout) or "timeout" in str(result), result
    assert len(held.held) <= window
    assert took < 30  # IBB's own wait for acknowledgements is 60 s
    stored_nothing_but(tmp_path / "in", data)
    assert not isinstance(got, Path)


async def test_forged_ibb_acknowledgements_for_dropped_data_never_count_as_delivered(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """After a few packets the server drops every IBB packet of alice's
    (her close too) and answers each itself, in bob's name, at once
    (forged early acknowledgements): alice "sends" the whole file in no
    time. bob, who gets nothing more, notices the stall; nothing is
    stored; alice never reports the file delivered, and keeps nothing
    waiting."""
    alice, bob = await pair(
        prosody, hostile, clients, tmp_path, stall_timeout=2.0, resume_attempts=0, **IBB
    )
    seen: list[int] = []
    forged: list[str] = []
    loop = asyncio.get_running_loop()

    def forge(_direction: str, element: ET.Element) -> Iterable[ET.Element] | None:
        closing = element.find(f"{{{NS_IBB}}}close") is not None
        if not (ibb_data(element) or closing):
            return None
        seen.append(1)
        if len(seen) <= 4:
            return None
        ack = (
            f"<iq type='result' id='{element.get('id')}' "
            f"from='{element.get('to')}' to='{alice.boundjid.full}'/>"
        )
        forged.append(ack)
        loop.call_soon(hostile.inject_to_client, ack)
        return []

    hostile.on_stanza(forge, "to_server")
    got, result, data = await transfer(alice, bob, tmp_path, 512 * KiB, timeout=60)
    assert isinstance(result, XferError), result
    assert isinstance(got, TransferTimeout), got  # bob's stall timeout
    assert forged
    stored_nothing_but(tmp_path / "in", data)
    ibb = alice.plugin["xfer_ibb"]
    assert not ibb._pending  # nothing left waiting, nothing grew


async def test_replayed_and_reordered_ibb_acknowledgements_change_nothing(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """The server sends each of bob's IBB acknowledgements to alice twice,
    holds them back in groups of three and lets each group go in reverse
    order: the replays are ignored, the order does not matter, the file
    arrives and verifies."""
    alice, bob = await pair(prosody, hostile, clients, tmp_path, **IBB)
    group: list[ET.Element] = []
    replayed: list[ET.Element] = []

    def shuffle(_direction: str, element: ET.Element) -> Iterable[ET.Element] | None:
        if not ibb_ack(element):
            return None
        group.append(element)
        if len(group) < 3:
            return []
        out = [*reversed(group), *group]
        replayed.extend(group)
        group.clear()
        return out

    hostile.on_stanza(shuffle, "to_client")
    # The last acknowledgements of a window may wait in the group: a stall
    # timeout longer than this test's data phase lets them out.
    flusher = asyncio.ensure_future(flush(hostile, group))
    try:
        got, result, data = await transfer(alice, bob, tmp_path, 256 * KiB)
    finally:
        flusher.cancel()
    assert isinstance(got, Path), got
    assert not isinstance(result, BaseException), result
    assert got.read_bytes() == data
    assert result.breaks == 0
    assert replayed


async def flush(hostile: HostileServer, group: list[ET.Element]) -> None:
    """Every half second, let out what a group holds (in reverse)."""
    while True:
        await asyncio.sleep(0.5)
        while group:
            hostile.inject_to_client(group.pop())


# -- (c) presence in bob's name ---------------------------------------------------


async def test_a_presence_flood_after_a_break_does_not_make_offers_without_end(
    prosody: LocalProsody,
    hostile: HostileServer,
    clients: list[XferClient],
    tmp_path: Path,
) -> None:
    """bob's client goes away mid-transfer; alice's server then floods her
    with presence in bob's name (hundreds of resources, his old one coming
    and going). She asks a bounded number of them, makes at most her
    bounded number of offers of the rest, and gives up saying so."""
    attempts = 2
    alice, bob = await pair(
        prosody,
        hostile,
        clients,
        tmp_path,
        resume_attempts=attempts,
        resume_wait=5.0,
        probe_timeout=1.0,
        **IBB,
    )
    old = bob.boundjid.full
    bare = bob.boundjid.bare
    gone = asyncio.Event()
    flooded: list[int] = []

    def progress(done: int, _total: int | None) -> None:
        if done > 128 * KiB:
            gone.set()

    async def flood() -> None:
        await gone.wait()
        await bob.stop()
        for n in range(400):
            hostile.inject_to_client(f"<presence from='{bare}/flood{n}'/>")
            if n % 50 == 0:
                hostile.inject_to_client(f"<presence from='{old}' type='unavailable'/>")
                hostile.inject_to_client(f"<presence from='{old}'/>")
                await asyncio.sleep(0.2)
            flooded.append(n)

    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(512 * KiB))
    inbox = tmp_path / "in"
    inbox.mkdir()

    async def receive() -> None:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        taking = asyncio.ensure_future(offer.accept(inbox))
        await gone.wait()
        taking.cancel()

    flooding = asyncio.ensure_future(flood())
    try:
        _, result = await asyncio.wait_for(
            asyncio.gather(
                receive(),
                alice.plugin["xfer_transfer"].send_file(old, src, progress=progress),
                return_exceptions=True,
            ),
            60,
        )
    finally:
        await asyncio.wait_for(flooding, 30)
    assert isinstance(result, XferError), result
    assert "gave up after" in str(result)
    initiates = [
        r for r in hostile.seen("to_server") if r.element.find(INITIATE) is not None
    ]
    assert len(initiates) <= 1 + attempts
    asked = {
        r.element.get("to")
        for r in hostile.seen("to_server")
        if r.element.find("{http://jabber.org/protocol/disco#info}query") is not None
        and (r.element.get("to") or "").startswith(f"{bare}/flood")
    }
    # At most a queue's worth per search (16), per attempt.
    assert len(asked) <= 16 * (1 + attempts)
    assert len(flooded) == 400


# -- a stalled link: both ends return soon after the stall is noticed -------------


async def test_on_a_stalled_link_both_ends_return_soon_after_the_stall_timeout(
    prosody: LocalProsody,
    tmp_path: Path,
    clients: list[XferClient],
    proxies: list[FaultProxy],
) -> None:
    """alice's link to her server goes quiet mid-transfer (IBB; a fault
    proxy holds every byte, cuts nothing). Each side notices after its
    stall timeout (2 s) and returns soon after, its session-terminate sent
    on a best-effort basis: it does not wait for an answer that cannot
    come over the quiet link (that wait alone took 10 s)."""
    proxy = FaultProxy("127.0.0.1", prosody.c2s_port)
    await proxy.start()
    proxies.append(proxy)
    settings = {**IBB, "stall_timeout": STALL, "resume_attempts": 0}
    alice = await transfer_client(
        prosody, "alice", "quiet", tmp_path / "a", via=proxy, **settings
    )
    clients.append(alice)
    bob = await bob_direct(prosody, clients, tmp_path / "b", **settings)
    introduce(alice, bob)
    loop = asyncio.get_running_loop()
    stalled: list[float] = []
    returned: dict[str, float] = {}

    def stall(done: int, _total: int | None) -> None:
        if done and not stalled:
            proxy.stall_forever()
            stalled.append(loop.time())

    async def timed(side: str, work: Awaitable[object]) -> object:
        try:
            return await work
        finally:
            returned[side] = loop.time()

    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(512 * KiB))
    inbox = tmp_path / "in"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await bob.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(inbox)

    got, result = await asyncio.wait_for(
        asyncio.gather(
            timed("bob", receive()),
            timed(
                "alice",
                alice.plugin["xfer_transfer"].send_file(
                    bob.boundjid.full, src, progress=stall
                ),
            ),
            return_exceptions=True,
        ),
        60,
    )
    proxy.resume()
    assert isinstance(got, TransferTimeout), got
    assert isinstance(result, XferError), result
    print({side: round(t - stalled[0], 2) for side, t in returned.items()})
    for side, at in returned.items():
        # The stall is noticed within 1.25 timeouts of the last byte moving
        # (xfer.aio.stall); the return follows within about a second.
        assert at - stalled[0] < STALL * 1.25 + TERMINATE_WAIT + 3.5, side
