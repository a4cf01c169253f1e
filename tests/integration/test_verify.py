"""Honest SMP between two real xfer clients (the library API) on the local
Prosody: what each outcome does to the trust stores on disk and to what the
API reports, an abort told apart from a failure, and the timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import xfer
from tests.integration.conftest import ACCOUNTS
from xfer.otr.trust import SMPResult, TrustStore, Verification
from xfer.store import IdentityStore
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.integration


class Side:
    """A connected client, its identity directory, the SMP outcomes it saw."""

    def __init__(self, client: xfer.Client, home: Path) -> None:
        self.client = client
        self.home = home
        self.done: asyncio.Queue[SMPResult] = asyncio.Queue()
        self.closed = False
        client.xmpp.add_event_handler(
            "xfer_otr_smp_done", lambda data: self.done.put_nowait(data[1])
        )

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.close()

    @property
    def jid(self) -> str:
        return self.client.jid

    def stored(self) -> TrustStore:
        """The trust store as saved on disk."""
        return IdentityStore(self.home).trust_store()

    def trusts(self, other: Side) -> Verification | None:
        """How ``other``'s fingerprint is trusted, on disk (None: not)."""
        entry = self.stored().entry(other.jid, _fingerprint(other))
        on_disk = None if entry is None else entry.how
        # What the API reports is what is stored.
        assert self.client.is_trusted(other.jid, other.client.fingerprint) is (
            on_disk is not None
        )
        return on_disk


def _fingerprint(side: Side) -> bytes:
    return side.client.xmpp.plugin["xfer_otr"].account.private_key.public.fingerprint


@pytest.fixture
async def sides(prosody: LocalProsody, tmp_path: Path) -> AsyncIterator[list[Side]]:
    made: list[Side] = []
    for name in ("alice", "bob"):
        home = tmp_path / f"{name}-id"
        client = await xfer.connect(
            f"{name}@{prosody.domain}/laptop",
            ACCOUNTS[name],
            identity=home,
            host="127.0.0.1",
            port=prosody.c2s_port,
            tls="none",
        )
        made.append(Side(client, home))
    # Each sees the other online before anyone starts OTR.
    await asyncio.sleep(0.5)
    yield made
    for side in made:
        await side.close()


async def smp(
    asker: Side, answerer: Side, ours: str, theirs: str, *, timeout: float = 60
) -> tuple[SMPResult, SMPResult]:
    async def answer() -> SMPResult:
        who, question = await answerer.client.next_verification(60, peer=asker.jid)
        assert (who, question) == (asker.jid, "our colour?")
        return await answerer.client.answer_verification(who, theirs, timeout=timeout)

    asked = asker.client.verify(
        answerer.jid, ours, question="our colour?", timeout=timeout
    )
    a, b = await asyncio.gather(asked, answer())
    return a, b


def trust_by_hand(one: Side, other: Side) -> None:
    one.client.trust(other.jid, other.client.fingerprint)


async def test_a_failed_smp_takes_back_the_trust_an_earlier_one_gave(
    sides: list[Side], tmp_path: Path
) -> None:
    alice, bob = sides
    assert await smp(alice, bob, "blue whale", "blue whale") == (
        SMPResult.SUCCEEDED,
        SMPResult.SUCCEEDED,
    )
    assert alice.trusts(bob) is bob.trusts(alice) is Verification.SMP
    # A second verification, with another secret on bob's side: both fail,
    # and neither trusts the other any more, on disk and in the API.
    assert await smp(alice, bob, "blue whale", "red fox") == (
        SMPResult.FAILED,
        SMPResult.FAILED,
    )
    assert alice.trusts(bob) is None
    assert bob.trusts(alice) is None
    # So alice no longer sends to bob.
    (tmp_path / "f.txt").write_text("hello")
    with pytest.raises(xfer.UntrustedPeer):
        await alice.client.send_file(bob.jid, tmp_path / "f.txt")


async def test_a_failed_smp_takes_back_a_trust_given_by_hand(
    sides: list[Side],
) -> None:
    alice, bob = sides
    trust_by_hand(alice, bob)
    trust_by_hand(bob, alice)
    assert alice.trusts(bob) is bob.trusts(alice) is Verification.MANUAL
    assert await smp(alice, bob, "blue whale", "red fox") == (
        SMPResult.FAILED,
        SMPResult.FAILED,
    )
    assert alice.trusts(bob) is None
    assert bob.trusts(alice) is None


async def test_a_timeout_and_the_abort_it_sends_leave_trust_alone(
    sides: list[Side],
) -> None:
    alice, bob = sides
    assert await smp(alice, bob, "blue whale", "blue whale") == (
        SMPResult.SUCCEEDED,
        SMPResult.SUCCEEDED,
    )
    # bob takes alice's question and does not answer in time.
    asked = asyncio.create_task(
        alice.client.verify(bob.jid, "blue whale", question="again?", timeout=2)
    )
    who, _ = await bob.client.next_verification(30, peer=alice.jid)
    with pytest.raises(xfer.VerificationTimeout) as caught:
        await asked
    assert str(caught.value) == f"no answer from {bob.jid} within 2 s"
    # alice gave the exchange up (TLV 6): bob sees an abort, not a failure.
    while (seen := await asyncio.wait_for(bob.done.get(), 10)) is SMPResult.SUCCEEDED:
        pass
    assert seen is SMPResult.ABORTED
    assert (
        await bob.client.answer_verification(who, "blue whale", timeout=10)
        is SMPResult.ABORTED
    )
    assert alice.trusts(bob) is bob.trusts(alice) is Verification.SMP


async def test_the_peer_leaving_mid_verification_is_an_abort(
    sides: list[Side],
) -> None:
    alice, bob = sides
    trust_by_hand(alice, bob)
    asked = asyncio.create_task(
        alice.client.verify(bob.jid, "blue whale", question="q?", timeout=60)
    )
    await bob.client.next_verification(30, peer=alice.jid)
    await bob.close()  # an SMP abort, then the end of the conversation
    started = asyncio.get_running_loop().time()
    assert await asked is SMPResult.ABORTED
    assert asyncio.get_running_loop().time() - started < 30  # not the timeout
    assert alice.trusts(bob) is Verification.MANUAL


async def test_waiting_for_a_question_honours_its_timeout(sides: list[Side]) -> None:
    alice, bob = sides
    started = asyncio.get_running_loop().time()
    with pytest.raises(xfer.VerificationTimeout) as caught:
        await bob.client.next_verification(1, peer=alice.jid)
    assert str(caught.value) == f"{alice.jid} did not ask to verify within 1 s"
    assert asyncio.get_running_loop().time() - started < 10
