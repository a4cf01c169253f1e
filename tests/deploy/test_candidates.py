"""Transfers between two machines: which path the data takes, and how fast
xfer falls back (issue 19, items 1 and 2).

Two clients in two network namespaces (``xfer.testing.netns``), a Prosody
with its proxy in a third that routes between them; each client is the
command line (``ip netns exec NS python -m xfer_cli ...``), as a user would
run it. Three cases:

* the hosts reach each other: the direct path (LAN candidates), not the proxy;
* only a reaches b (a firewall in front of a): direct, to b's candidate;
* they do not (dropped silently, as by a firewall): the proxy, quickly;
* the proxy is dropped too: IBB, within a couple of seconds of the last
  candidate failing.

The timing bounds are the issue's functional requirement ("within 2 s");
they are asserted with a generous margin and the measured values printed.
With ``XFER_DEPLOY_TABLE=path`` the table of the runs is written there
(``benchmarks/results/deploy.md``, by ``tests/deploy/_table.py``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_or_skip
from tests.deploy._cli import CommandLineUser
from tests.deploy._table import Run, record
from xfer.testing.netns import (
    HOSTS,
    SERVER_ADDRESS,
    NetnsUnavailable,
    Topology,
    netns_available,
)

pytestmark = pytest.mark.deploy

ACCOUNTS = {"alice": "alice-password", "bob": "bob-password"}
#: The issue's bound, and the margin asserted on a loaded machine.
BOUND = 2.0
MARGIN = 4.0
#: The per-candidate connect timeout (the library's default).
CANDIDATE_TIMEOUT = 2.0


class Person(CommandLineUser):
    """A user of the command line on one host of the topology."""

    def __init__(self, name: str, host: str, net: Topology, home: Path) -> None:
        assert net.server is not None
        super().__init__(
            f"{name}@{net.server.domain}", functools.partial(net.command, host)
        )
        self.name, self.net = name, net
        self.env = {
            **os.environ,
            "XFER_JID": f"{self.jid}/cli",
            "XFER_PASSWORD": ACCOUNTS[name],
            "XFER_HOST": SERVER_ADDRESS,
            "XFER_PORT": str(net.server.c2s_port),
            "XFER_TLS": "none",
            "XFER_DATA_DIR": str(home / f"{name}-data"),
            "XFER_CONFIG": str(home / "no-config.toml"),
        }


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    why = netns_available()
    require_or_skip(why is None, f"network namespaces ({why})")
    topology = Topology(accounts=dict(ACCOUNTS))
    try:
        topology.start()
    except NetnsUnavailable as exc:  # no CAP_SYS_ADMIN, say: skip, or fail in CI
        require_or_skip(False, f"network namespaces ({exc})")
    try:
        yield topology
    finally:
        topology.close()


@pytest.fixture(scope="module")
def people(net: Topology, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("deploy-home")
    alice = Person("alice", "a", net, home)
    bob = Person("bob", "b", net, home)
    for one, other in ((alice, bob), (bob, alice)):
        done = one.run("trust", other.jid, other.fingerprint())
        assert done.returncode == 0, done.stderr
    return alice, bob


def transfer(
    net: Topology, people: tuple[Person, Person], tmp_path: Path, size: int, name: str
) -> dict[str, Any]:
    """alice (host a) sends ``size`` random bytes to bob (host b); the
    sender's "sent" event."""
    alice, bob = people
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))
    inbox = tmp_path / "inbox"
    receiver = bob.start("receive", "--yes", "--once", "--dir", str(inbox), "--json")
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()
        assert line, receiver.stderr.read() if receiver.stderr else ""
        assert json.loads(line)["event"] == "ready"
        sent = alice.run("send", str(src), "--to", bob.jid, "--json")
        assert sent.returncode == 0, sent.stderr
    finally:
        try:
            receiver.communicate(timeout=30)  # --once: it exits by itself
        except subprocess.TimeoutExpired:
            receiver.send_signal(signal.SIGINT)
            receiver.communicate(timeout=10)
    assert (inbox / "payload.bin").read_bytes() == src.read_bytes()
    [event] = [
        e for e in map(json.loads, sent.stdout.splitlines()) if e["event"] == "sent"
    ]
    run = Run(
        scenario=name,
        transport=event["transport"],
        via=event["via"],
        size=size,
        seconds=event["seconds"],
        setup_seconds=event["setup_seconds"],
        after_failure=event["after_failure"],
    )
    record("lan", run)
    print(  # the measured values, for the log
        f"\n{name}: {run.transport} via {run.via or '-'}, {run.rate:.1f} MB/s, "
        f"first byte {run.setup_seconds:.2f} s after the accept, "
        f"{run.after_failure} s after the last candidate failed"
    )
    return event


def test_hosts_that_reach_each_other_go_direct(
    net: Topology, people: tuple[Person, Person], tmp_path: Path
) -> None:
    net.block()
    event = transfer(net, people, tmp_path, 32 << 20, "LAN, nothing blocked")
    assert event["transport"] == "socks5-direct"
    # One of the hosts' own LAN addresses: not loopback, not the proxy.
    lan = {f"{v4}:" for (v4, _), _ in HOSTS.values()} | {
        f"[{v6}]:" for (_, v6), _ in HOSTS.values()
    }
    assert any(event["via"].startswith(prefix) for prefix in lan), event["via"]


def test_a_peer_that_cannot_reach_us_goes_direct_to_its_own_candidates(
    net: Topology, people: tuple[Person, Person], tmp_path: Path
) -> None:
    # bob (host b) cannot open connections to alice (host a); she can to him.
    net.block(into_a=True)
    event = transfer(net, people, tmp_path, 32 << 20, "b cannot reach a")
    assert event["transport"] == "socks5-direct"
    (b4, b6), _ = HOSTS["b"]
    assert event["via"].startswith((f"{b4}:", f"[{b6}]:")), event["via"]
    assert event["setup_seconds"] < MARGIN, event


def test_hosts_that_cannot_reach_each_other_use_the_proxy_quickly(
    net: Topology, people: tuple[Person, Person], tmp_path: Path
) -> None:
    net.block(between_hosts=True)
    started = time.monotonic()
    event = transfer(net, people, tmp_path, 32 << 20, "hosts cut off from each other")
    assert event["transport"] == "socks5-proxy"
    assert event["via"] == f"proxy.{net.domain}"
    # Staggered attempts reach the proxy while the direct ones still hang:
    # the data starts well within the bound, not after connect timeouts.
    assert event["setup_seconds"] < MARGIN, event
    assert time.monotonic() - started < 60


def test_without_any_socks5_path_ibb_starts_soon_after_the_last_failure(
    net: Topology, people: tuple[Person, Person], tmp_path: Path
) -> None:
    net.block(between_hosts=True, proxy=True)
    event = transfer(net, people, tmp_path, 4 << 20, "hosts and proxy cut off")
    assert event["transport"] == "ibb"
    assert event["after_failure"] is not None
    assert event["after_failure"] < MARGIN, event
    # Every candidate gets its timeout, staggered: the whole wait is about
    # one timeout plus the stagger, never one timeout per candidate.
    assert event["setup_seconds"] < CANDIDATE_TIMEOUT + MARGIN, event


def _namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_the_topology_leaves_nothing_behind_even_when_its_user_fails(
    net: Topology,  # only for the same requirements (root, ip, nft)
) -> None:
    topology = Topology(accounts={"carol": "c"})
    names = {topology.ns(n) for n in ("server", *HOSTS)}
    seen: set[str] = set()

    def broken() -> None:
        with topology:
            seen.update(_namespaces())
            raise RuntimeError("the test broke")

    with pytest.raises(RuntimeError, match="the test broke"):
        broken()
    assert names <= seen
    assert not names & _namespaces()
    assert topology.server is None
