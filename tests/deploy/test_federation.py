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

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._cli import (
    Person,
    Receiving,
    federation,
    note,
    on_disk,
    send_checked,
    sent_event,
    trusting_people,
    wait_for_data,
)
from xfer.testing.federation import (
    CLIENTS,
    ETC_NETNS,
    Federation,
    Server,
    ServerSite,
    prosody,
)
from xfer.testing.prosody import LocalProsody

pytestmark = pytest.mark.deploy

#: The issue's bound, and the margin asserted on a loaded machine.
MARGIN = 4.0
CANDIDATE_TIMEOUT = 2.0
#: How long the s2s link stays cut in the middle of a transfer.
CUT_SECONDS = 15.0
SECTION = "federation"
#: The receiver writes verified data in batches of (at most) this size.
BATCH = 2 << 20


@pytest.fixture(scope="module")
def net() -> Any:
    with federation() as topology:
        yield topology


@pytest.fixture(scope="module", name="people")
def _people(net: Federation, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return trusting_people(net, tmp_path_factory.mktemp("federation-home"))


def _pair(people: tuple[Person, Person], direction: str) -> tuple[Person, Person]:
    alice, bob = people
    return (alice, bob) if direction == "a to b" else (bob, alice)


def _note(scenario: str, size: int, event: dict[str, Any]) -> None:
    note(SECTION, scenario, size, event)


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
    get them intact; the sender's "sent" event, in the table unless not
    ``table``."""
    event = send_checked(sender, receiver, tmp_path, size)
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
        wait_for_data(inbox)  # the data flows: the first batch is written
        net.block(direct=True, proxies=True, s2s=True)
        assert sending.poll() is None, "the transfer ended before the cut"
        time.sleep(1)  # what was in flight lands
        before = on_disk(inbox)
        time.sleep(CUT_SECONDS - 1)
        during = on_disk(inbox) - before
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
    event = sent_event(out)
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
