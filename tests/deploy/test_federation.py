"""Transfers between two federated domains, TLS everywhere (issue 19,
"Prove it").

``xfer.testing.federation``: alice@a.test and bob@b.test, each client in
its own network namespace, each domain's Prosody in its own, a router
between them with a local DNS for the test domains, certificates from a
throw-away CA that both servers trust (c2s and s2s require TLS, s2s a
valid certificate). The clients are the command line, as a new user runs
it: no host or port given (SRV lookup through the namespace's resolver),
STARTTLS, ``--ca-file``. Cases: both directions with nothing blocked; the
direct path dropped (the proxy, quickly); the proxies dropped too (IBB,
quickly); the s2s link cut for 15 s in the middle of an IBB transfer and
restored.

The timing bounds are the issue's functional requirement ("within 2 s"),
asserted with a margin for a loaded machine; the measured values are
printed, and written to the table with ``XFER_DEPLOY_TABLE``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_or_skip
from tests.deploy._table import Run, record
from xfer.testing.federation import (
    CLIENTS,
    ETC_NETNS,
    Federation,
    Server,
    ServerSite,
    prosody,
)
from xfer.testing.netns import NetnsUnavailable, netns_available
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.deploy

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
#: The issue's bound, and the margin asserted on a loaded machine.
MARGIN = 4.0
CANDIDATE_TIMEOUT = 2.0
#: How long the s2s link stays cut in the middle of a transfer.
CUT_SECONDS = 15.0
SECTION = "federation"
#: The receiver writes verified data in batches of (at most) this size.
BATCH = 2 << 20


class Person:
    """A user of the command line in one client namespace."""

    def __init__(self, user: str, side: str, net: Federation, home: Path) -> None:
        self.net, self.side = net, side
        self.jid = f"{user}@{net.running[side].domain}"
        assert net.ca_file is not None
        self.ca_file = str(net.ca_file)
        self.env = {
            **os.environ,
            "XFER_JID": f"{self.jid}/cli",
            "XFER_PASSWORD": PASSWORDS[user],
            "XFER_DATA_DIR": str(home / f"{user}-data"),
            "XFER_CONFIG": str(home / "no-config.toml"),
        }
        for name in ("XFER_HOST", "XFER_PORT", "XFER_TLS", "XFER_CA_FILE"):
            self.env.pop(name, None)

    def argv(self, *args: str) -> list[str]:
        return self.net.command(
            f"c{self.side}", [sys.executable, "-m", "xfer_cli", *args]
        )

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fingerprint(self) -> str:
        done = self.run("keys", "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["fingerprint"])


@pytest.fixture(scope="module")
def net() -> Any:
    why = netns_available()
    require_or_skip(why is None, f"network namespaces ({why})")
    topology = Federation(
        accounts={"a": {"alice": PASSWORDS["alice"]}, "b": {"bob": PASSWORDS["bob"]}}
    )
    try:
        topology.start()
    except NetnsUnavailable as exc:  # no CAP_SYS_ADMIN, say: skip, or fail in CI
        require_or_skip(False, f"network namespaces ({exc})")
    try:
        yield topology
    finally:
        topology.close()


@pytest.fixture(scope="module")
def people(net: Federation, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("federation-home")
    alice = Person("alice", "a", net, home)
    bob = Person("bob", "b", net, home)
    for one, other in ((alice, bob), (bob, alice)):
        done = one.run("trust", other.jid, other.fingerprint())
        assert done.returncode == 0, done.stderr
    return alice, bob


class Receiving:
    """``xfer receive --once`` running in the receiver's namespace."""

    def __init__(self, person: Person, inbox: Path) -> None:
        self.process = person.start(
            "receive", "--yes", "--once", "--dir", str(inbox), "--json",
            "--ca-file", person.ca_file,
        )  # fmt: skip
        assert json.loads(self.next_line())["event"] == "ready"

    def next_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            pytest.fail(f"the receiver ended: {self.process.stderr.read()}")
        return line

    def wait_for(self, event: str) -> dict[str, Any]:
        while True:
            found: dict[str, Any] = json.loads(self.next_line())
            if found["event"] == event:
                return found

    def finish(self) -> None:
        try:
            self.process.communicate(timeout=30)  # --once: it exits by itself
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.communicate(timeout=10)


def _sent(stdout: str) -> dict[str, Any]:
    [event] = [e for e in map(json.loads, stdout.splitlines()) if e["event"] == "sent"]
    return event


def _pair(people: tuple[Person, Person], direction: str) -> tuple[Person, Person]:
    alice, bob = people
    return (alice, bob) if direction == "a to b" else (bob, alice)


def _note(scenario: str, size: int, event: dict[str, Any]) -> None:
    run = Run(
        scenario=scenario,
        transport=event["transport"],
        via=event["via"],
        size=size,
        seconds=event["seconds"],
        setup_seconds=event["setup_seconds"],
        after_failure=event["after_failure"],
    )
    record(SECTION, run)
    print(  # the measured values, for the log
        f"\n{scenario}: {run.transport} via {run.via or '-'}, {run.rate:.1f} MB/s, "
        f"first byte {run.setup_seconds:.2f} s after the accept, "
        f"{run.after_failure} s after the last candidate failed, "
        f"{event['breaks']} break(s)"
    )


def transfer(
    sender: Person,
    receiver: Person,
    tmp_path: Path,
    size: int,
    scenario: str,
    *,
    table: bool = True,
) -> dict[str, Any]:
    """``sender`` sends ``size`` random bytes to ``receiver``, which must
    get them intact; the sender's "sent" event."""
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))
    inbox = tmp_path / "inbox"
    receiving = Receiving(receiver, inbox)
    try:
        sent = sender.run(
            "send", str(src), "--to", receiver.jid, "--json",
            "--ca-file", sender.ca_file,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    finally:
        receiving.finish()
    assert (inbox / "payload.bin").read_bytes() == src.read_bytes()
    event = _sent(sent.stdout)
    if table:
        _note(scenario, size, event)
    return event


def test_the_servers_resolve_each_other_through_the_test_dns(net: Federation) -> None:
    for side, other in (("a", "b"), ("b", "a")):
        looked_up = subprocess.run(
            net.command(f"s{side}", ["getent", "ahostsv4", f"proxy.{other}.test"]),
            capture_output=True,
            text=True,
            check=False,
        )
        assert looked_up.stdout.split()[0] == net.server_address(other), looked_up
    unknown = subprocess.run(
        net.command("ca", ["getent", "hosts", "c.test"]),
        capture_output=True,
        check=False,
    )
    assert unknown.returncode != 0


@pytest.mark.parametrize("direction", ["a to b", "b to a"])
def test_across_domains_with_tls_goes_direct_and_says_so(
    net: Federation,
    people: tuple[Person, Person],
    tmp_path: Path,
    direction: str,
) -> None:
    net.block()
    sender, receiver = _pair(people, direction)
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(8 << 20))
    receiving = Receiving(receiver, tmp_path / "inbox")
    try:
        sent = sender.run(
            "send", str(src), "--to", receiver.jid, "--ca-file", sender.ca_file
        )
        assert sent.returncode == 0, sent.stderr
    finally:
        receiving.finish()
    assert (tmp_path / "inbox" / "report.bin").read_bytes() == src.read_bytes()
    # What a user reads: the path taken, to the peer's own LAN address.
    # (Human-readable lines go to stderr; stdout is for --json.)
    line = next(x for x in sent.stderr.splitlines() if x.startswith("sent "))
    assert "direct to" in line, sent.stderr
    lan = [*CLIENTS["a"], *CLIENTS["b"]]
    assert any(address in line for address in lan), line
    # And its measured figures, through --json (the same path again).
    event = transfer(sender, receiver, tmp_path, 32 << 20, f"{direction}, open")
    assert event["transport"] == "socks5-direct"


@pytest.mark.parametrize("direction", ["a to b", "b to a"])
def test_with_the_direct_path_dropped_the_proxy_starts_quickly(
    net: Federation, people: tuple[Person, Person], tmp_path: Path, direction: str
) -> None:
    net.block(direct=True)
    sender, receiver = _pair(people, direction)
    scenario = f"{direction}, direct dropped"
    event = transfer(sender, receiver, tmp_path, 32 << 20, scenario)
    assert event["transport"] == "socks5-proxy"
    assert event["via"] in ("proxy.a.test", "proxy.b.test"), event
    assert event["setup_seconds"] < MARGIN, event


@pytest.mark.parametrize("direction", ["a to b", "b to a"])
def test_with_the_proxies_dropped_too_ibb_starts_quickly(
    net: Federation, people: tuple[Person, Person], tmp_path: Path, direction: str
) -> None:
    net.block(direct=True, proxies=True)
    sender, receiver = _pair(people, direction)
    scenario = f"{direction}, direct and proxies dropped"
    event = transfer(sender, receiver, tmp_path, 2 << 20, scenario)
    assert event["transport"] == "ibb"
    assert event["after_failure"] is not None
    assert event["after_failure"] < MARGIN, event
    assert event["setup_seconds"] < CANDIDATE_TIMEOUT + MARGIN, event


def test_an_s2s_cut_in_the_middle_of_a_transfer_is_survived(
    net: Federation, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """IBB (the data crosses s2s); the link between the two servers is
    dropped for CUT_SECONDS once the data flows, then restored."""
    alice, bob = people
    net.block(direct=True, proxies=True)
    size = 24 << 20  # IBB moves 1-2 MB/s here: still going after the cut
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(size))
    inbox = tmp_path / "inbox"
    receiving = Receiving(bob, inbox)
    sending = alice.start(
        "send", str(src), "--to", bob.jid, "--json", "--ca-file", alice.ca_file
    )
    try:
        receiving.wait_for("offer")
        _wait_for_data(inbox)  # the data flows: the first batch is written
        net.block(direct=True, proxies=True, s2s=True)
        assert sending.poll() is None, "the transfer ended before the cut"
        time.sleep(1)  # what was in flight lands
        before = _on_disk(inbox)
        time.sleep(CUT_SECONDS - 1)
        during = _on_disk(inbox) - before
        net.block(direct=True, proxies=True)
        assert sending.poll() is None, "the sender gave up during the cut"
        out, err = sending.communicate(timeout=240)
        assert sending.returncode == 0, err
    finally:
        if sending.poll() is None:
            sending.kill()
            sending.communicate()
        receiving.finish()
    assert (inbox / "payload.bin").read_bytes() == src.read_bytes()
    event = _sent(out)
    assert event["transport"] == "ibb"
    assert event["seconds"] > CUT_SECONDS, event  # it did wait through the cut
    print(f"\nduring the cut: {during} bytes more on disk (of {size})")
    assert during <= 2 * BATCH, during  # the cut did stop the data
    _note(f"a to b, IBB, s2s cut for {CUT_SECONDS:.0f} s", size, event)


def test_the_servers_federate_over_tls_with_certificates(
    net: Federation, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """Every s2s stream is encrypted and its peer authenticated by its
    certificate (SASL EXTERNAL): s2s_secure_auth, as configured. (Read
    from Prosody's log, after a transfer through the proxies that makes
    both domains and both proxy components talk.)"""
    net.block(direct=True)
    alice, bob = people
    transfer(alice, bob, tmp_path, 1 << 20, "", table=False)
    incoming: set[tuple[str, str]] = set()
    for server in net.running.values():
        assert isinstance(server, LocalProsody)
        assert server.directory is not None
        log = (server.directory / "prosody.log").read_text()
        pattern = r"(s2sin\w+)\s+info\s+Incoming s2s connection (\S+)->(\S+) complete"
        for stream, peer, local in re.findall(pattern, log):
            incoming.add((peer, local))
            assert f"{stream}\tinfo\tStream encrypted (TLS" in log, stream
            accepted = f"{local}:saslauth\tinfo\tAccepting SASL EXTERNAL identity"
            assert f"{accepted} from {peer}\n" in log, (peer, local)
    assert {("a.test", "b.test"), ("b.test", "a.test")} <= incoming, incoming
    assert any(local.startswith("proxy.") for _, local in incoming), incoming


def _on_disk(inbox: Path) -> int:
    """How many received bytes are on disk under ``inbox`` (any file)."""
    return sum(p.stat().st_size for p in inbox.rglob("*") if p.is_file())


def _wait_for_data(inbox: Path, timeout: float = 60) -> None:
    """Until some received data is on disk under ``inbox`` (any file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _on_disk(inbox):
            return
        time.sleep(0.05)
    pytest.fail(f"no data arrived in {timeout} s")


def _namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_the_federation_leaves_nothing_behind_even_when_its_user_fails(
    net: Federation,  # only for the same requirements (root, ip, nft)
) -> None:
    sites: list[ServerSite] = []

    def recorded(site: ServerSite) -> Server:  # any implementation plugs in so
        sites.append(site)
        return prosody(site)

    topology = Federation(
        accounts={"a": {"carol": "c"}}, servers={"a": recorded, "b": recorded}
    )
    names = {topology.ns(n) for n in ("router", "sa", "sb", "ca", "cb")}
    seen: set[str] = set()
    resolvers: list[Path] = []

    def broken() -> None:
        with topology:
            seen.update(_namespaces())
            resolvers.extend(ETC_NETNS / n for n in names if (ETC_NETNS / n).exists())
            raise RuntimeError("the test broke")

    with pytest.raises(RuntimeError, match="the test broke"):
        broken()
    assert [(x.domain, x.namespace, x.address, x.accounts) for x in sites] == [
        ("a.test", topology.ns("sa"), "10.78.2.2", {"carol": "c"}),
        ("b.test", topology.ns("sb"), "10.78.3.2", {}),
    ]
    assert names <= seen
    assert len(resolvers) == 4
    assert not names & _namespaces()
    assert not any(path.exists() for path in resolvers)
    assert not topology.running
