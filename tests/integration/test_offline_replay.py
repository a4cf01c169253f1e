"""Offline storage replays stale OTR, for real: a Prosody with mod_offline
and stream management, as stock servers run.

The sender's OTR message to a receiver whose connection died unacknowledged
is stored by Prosody (stamped twice: stream management's delay, then
mod_offline's) and delivered first at the receiver's next login; a D-H Commit
sent while the receiver was offline comes back the same way (once stamped).
The receiver must not act on either (no key exchange, no OTR error), and a
send that follows at once must work at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import xfer
from tests.conftest import require_or_skip
from xfer.errors import NotSecure
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.transfer.offer import TransferOffer
from xfer.xmpp._slixmpp import plugin
from xfer.xmpp.otr import XferOTR

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw"}
#: The send after the replay must not wait for any timeout (30 s for a key
#: exchange): a bound on correctness, not a measure of speed.
AT_ONCE = 10.0


@pytest.fixture(scope="module")
def stock() -> Iterator[LocalProsody]:
    """Offline storage on; a broken connection's session is kept 1 s."""
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    with LocalProsody(accounts=dict(ACCOUNTS), offline=True, hibernation=1) as server:
        yield server


async def login(server: LocalProsody, name: str, home: Path) -> xfer.Client:
    return await xfer.connect(
        f"{name}@{server.domain}/desk",  # a fixed resource, as in the report
        ACCOUNTS[name],
        identity=home / name,
        host="127.0.0.1",
        port=server.c2s_port,
        tls="none",
    )


def otr(client: xfer.Client) -> XferOTR:
    return plugin(client.xmpp, "xfer_otr", XferOTR)


def stored(server: LocalProsody, user: str) -> Path:
    assert server.directory is not None
    return server.directory / "data" / "xfer%2etest" / "offline" / f"{user}.list"


async def until(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def transfer(alice: xfer.Client, bob: xfer.Client, tmp: Path, n: int) -> float:
    """A small file from alice to bob; how long it took."""
    source = tmp / f"file{n}.txt"
    source.write_bytes(b"%d\n" % n * 1000)
    inbox = tmp / f"inbox{n}"
    inbox.mkdir()

    async def receive() -> Path:
        offer = await bob.next_offer()
        return await offer.accept(inbox)

    started = time.monotonic()
    saved, _ = await asyncio.wait_for(
        asyncio.gather(receive(), alice.send_file(bob.jid, source)), 60
    )
    assert saved.read_bytes() == source.read_bytes()
    return time.monotonic() - started


async def test_a_replayed_offer_is_ignored_and_the_next_send_works_at_once(
    stock: LocalProsody, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xfer.xmpp.otr")
    alice, bob = (
        await login(stock, "alice", tmp_path),
        await login(stock, "bob", tmp_path),
    )
    alice.trust(bob.jid, bob.fingerprint)
    bob.trust(alice.jid, alice.fingerprint)
    await transfer(alice, bob, tmp_path, 1)
    bob_jid, alice_jid = bob.jid, alice.jid

    # bob's client stops reading (nothing it gets is acknowledged), alice
    # sends an offer in OTR, and bob's connection dies.
    bob.xmpp.transport.pause_reading()
    found = otr(alice).secured(bob_jid)
    assert found is not None
    session = found[1]
    assert session.their_fingerprint is not None
    offer = TransferOffer(
        transfer_id=b"\x07" * 16,
        salt=bytes(32),
        suite=1,
        chunk_size=65536,
        size=10,
        name="stale.txt",
        sha256=bytes(32),
    )
    otr(alice).send_offer(session, offer, fingerprint=session.their_fingerprint)
    await asyncio.sleep(0.5)
    bob.xmpp.abort()
    # After the hibernation, Prosody stores it and tells alice bob is gone.
    await until(lambda: otr(alice).session(bob_jid) is None)
    await until(stored(stock, "bob").exists)
    assert stored(stock, "bob").read_text().count("urn:xmpp:delay") == 1

    bob = await login(stock, "bob", tmp_path)
    await until(lambda: not stored(stock, "bob").exists())
    await until(lambda: "ignoring a delayed" in caplog.text)
    assert not otr(bob)._set_up.ake_under_way(alice_jid)
    assert otr(bob).session(alice_jid) is None

    took = await transfer(alice, bob, tmp_path, 2)
    assert took < AT_ONCE
    await alice.close()
    await bob.close()


async def test_a_commit_stored_while_offline_is_ignored(
    stock: LocalProsody, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xfer.xmpp.otr")
    alice, bob = (
        await login(stock, "alice", tmp_path),
        await login(stock, "bob", tmp_path),
    )
    alice.trust(bob.jid, bob.fingerprint)
    bob.trust(alice.jid, alice.fingerprint)
    bob_jid = bob.jid
    await bob.close()
    await until(lambda: not otr(alice).account.sessions(bob_jid))
    # A D-H Commit to bob, offline: stored, never answered; that sender
    # gives up and goes (``xfer send`` exits), and a new one will try again.
    with pytest.raises(NotSecure):
        await otr(alice).secure(bob_jid, timeout=1)
    await until(stored(stock, "bob").exists)
    await alice.close()
    alice = await login(stock, "alice", tmp_path)

    bob = await login(stock, "bob", tmp_path)
    await until(lambda: not stored(stock, "bob").exists())
    await until(lambda: "ignoring a delayed" in caplog.text)
    assert not otr(bob)._set_up.ake_under_way(alice.jid)

    took = await transfer(alice, bob, tmp_path, 3)
    assert took < AT_ONCE
    await alice.close()
    await bob.close()
