"""Fifty transfers through a network that breaks: never a corrupt file.

alice reaches Prosody through one fault proxy and offers bob a SOCKS5
streamhost only through another; bob offers no transport of his own, so
every byte of every transfer crosses a proxy that may cut or stall it.
Each transfer draws (from a fixed seed) one of:

* a cut of the bytestream at a random byte of the sealed stream (most);
* two such cuts, so that the resumed transfer breaks again;
* a stall of the bytestream, shorter than the stall timeout;
* a cut of alice's XMPP connection once a random share of the data went
  through, or during the set-up (OTR, Jingle, the transport).

Every transfer must end either with a byte-identical file (after resuming)
or with a typed error on both sides and nothing at the destination; a
corrupt or partial destination file fails the test. The counts are printed
(``-s``) and recorded in the issue's note.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import introduce, transfer_client
from xfer.aio.partial import PART_SUFFIX
from xfer.envelope import DEFAULT_CHUNK_SIZE, EnvelopeHeader
from xfer.errors import XferError
from xfer.testing.faults import FaultProxy
from xfer.testing.prosody import LocalProsody
from xfer.xmpp.client import XferClient

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TRANSFERS = 50
#: The default run's share of them (the long profile runs all fifty).
SHORT_TRANSFERS = 12
SEED = 20261125
FAULTS = ("cut", "cut", "cut", "two-cuts", "stall", "xmpp-cut", "xmpp-cut-early")

#: Faster than the defaults, so that fifty breaks fit in a test run.
CONFIG: dict[str, object] = {
    "connect_timeout": 10.0,
    "resume_backoff": 0.2,
    "resume_backoff_max": 2.0,
    "resume_wait": 30.0,
    "stall_timeout": 10.0,
}


@pytest.fixture
async def network(
    prosody: LocalProsody, tmp_path: Path
) -> AsyncIterator[tuple[XferClient, XferClient, FaultProxy, FaultProxy]]:
    xmpp_proxy = FaultProxy("127.0.0.1", prosody.c2s_port, seed=SEED)
    await xmpp_proxy.start()
    a = await transfer_client(
        prosody,
        "alice",
        "faulty",
        tmp_path / "alice-id",
        via=xmpp_proxy,
        socks5_proxy=False,
        **CONFIG,
    )
    host, port = await a.plugin["xfer_socks5"].listen()
    s5_proxy = FaultProxy(host, port, seed=SEED + 1)
    await s5_proxy.start()
    a.plugin["xfer_transfer"].config["advertise"] = [(s5_proxy.host, s5_proxy.port)]
    b = await transfer_client(
        prosody,
        "bob",
        "faults",
        tmp_path / "bob-id",
        socks5_proxy=False,
        socks5_direct=False,
        ibb=False,
        **CONFIG,
    )
    introduce(a, b)
    yield a, b, xmpp_proxy, s5_proxy
    for c in (a, b):
        await c.stop()
    for p in (xmpp_proxy, s5_proxy):
        await p.stop()


def sealed_size(size: int) -> int:
    header = EnvelopeHeader(
        suite=1, chunk_size=DEFAULT_CHUNK_SIZE, salt=bytes(32), transfer_id=bytes(16)
    )
    return header.sealed_size(size)


async def cut_when(xmpp: FaultProxy, data: FaultProxy, after: int) -> None:
    """Cut the XMPP connection once ``after`` more bytes crossed ``data``."""
    start = data.bytes_relayed
    for _ in itertools.count():
        if data.bytes_relayed - start >= after:
            break
        await asyncio.sleep(0.001)
    xmpp.cut_all()


async def one_transfer(
    a: XferClient,
    b: XferClient,
    src: Path,
    inbox: Path,
) -> tuple[Path | BaseException, object]:
    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=60)
        return await offer.accept(inbox)

    got, sent = await asyncio.wait_for(
        asyncio.gather(
            receive(),
            a.plugin["xfer_transfer"].send_file(f"bob@{b.boundjid.domain}", src),
            return_exceptions=True,
        ),
        120,
    )
    return got, sent


@pytest.mark.long
async def test_fifty_transfers_with_random_cuts(
    network: tuple[XferClient, XferClient, FaultProxy, FaultProxy],
    tmp_path: Path,
) -> None:
    await random_cuts(network, tmp_path, TRANSFERS, min_breaks=TRANSFERS // 2)


async def test_twelve_transfers_with_random_cuts(
    network: tuple[XferClient, XferClient, FaultProxy, FaultProxy],
    tmp_path: Path,
) -> None:
    """The first twelve of the fifty (same seed), in the default run: every
    kind of fault, the same bounds (fewer breaks: stalls come early)."""
    await random_cuts(network, tmp_path, SHORT_TRANSFERS, min_breaks=4)


async def random_cuts(
    network: tuple[XferClient, XferClient, FaultProxy, FaultProxy],
    tmp_path: Path,
    transfers: int,
    *,
    min_breaks: int,
) -> None:
    a, b, xmpp_proxy, s5_proxy = network
    rng = random.Random(SEED)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outcomes: collections.Counter[str] = collections.Counter()
    breaks = resumed_bytes = 0
    for i in range(transfers):
        fault = rng.choice(FAULTS)
        size = rng.randint(1, 3 * (1 << 20))
        src = tmp_path / f"file-{i:02d}.bin"
        data = os.urandom(size)
        src.write_bytes(data)
        sealed = sealed_size(size)
        timer: asyncio.TimerHandle | None = None
        watcher: asyncio.Task[None] | None = None
        if fault == "cut":
            s5_proxy.cut_after(rng.randint(1, sealed), direction="down")
        elif fault == "two-cuts":
            s5_proxy.cut_after(rng.randint(1, sealed), direction="down")
            s5_proxy.cut_after(rng.randint(1, sealed), direction="down")
        elif fault == "stall":
            s5_proxy.stall(rng.uniform(0.1, 2.0))
        elif fault == "xmpp-cut":
            watcher = asyncio.ensure_future(
                cut_when(xmpp_proxy, s5_proxy, rng.randint(1, sealed))
            )
        else:
            delay = rng.uniform(0.0, 0.05)
            timer = asyncio.get_running_loop().call_later(delay, xmpp_proxy.cut_all)
        got, sent = await one_transfer(a, b, src, inbox)
        if timer is not None:
            timer.cancel()
        if watcher is not None:
            watcher.cancel()
        s5_proxy.resume()
        dest = inbox / src.name
        if isinstance(got, Path):
            assert got == dest
            assert (
                hashlib.sha256(got.read_bytes()).digest()
                == hashlib.sha256(data).digest()
            ), f"transfer {i} ({fault}): corrupt file"
            assert not isinstance(sent, BaseException), (i, fault, sent)
            outcomes["identical"] += 1
            breaks += sent.breaks  # type: ignore[attr-defined]
            resumed_bytes += sent.resumed_from  # type: ignore[attr-defined]
        else:
            # A clear, typed error on both sides and nothing at the destination.
            assert isinstance(got, XferError), (i, fault, got)
            assert isinstance(sent, XferError), (i, fault, sent)
            assert not dest.exists(), f"transfer {i} ({fault}) left a file: {got!r}"
            outcomes[f"failed: {type(got).__name__}"] += 1
        outcomes[f"fault: {fault}"] += 1
        # Unused rules must not spill over into the next transfer.
        s5_proxy.clear_rules()
    print(
        f"\n{transfers} transfers: {dict(outcomes)}; {breaks} breaks resumed, "
        f"{resumed_bytes} bytes not sent twice; proxy cuts: "
        f"bytestream {s5_proxy.cuts}, XMPP {xmpp_proxy.cuts}"
    )
    # Nothing is left over but the destination files.
    assert not [p for p in inbox.iterdir() if p.name.endswith(PART_SUFFIX)]
    # The faults happened, and resuming did its work.
    assert s5_proxy.cuts >= transfers // 3
    assert xmpp_proxy.cuts >= transfers // 10
    assert breaks >= min_breaks
    assert outcomes["identical"] >= transfers * 9 // 10
    # Every kind of fault was drawn.
    assert {f"fault: {fault}" for fault in FAULTS} <= set(outcomes)
