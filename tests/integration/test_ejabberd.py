"""xfer against a second server implementation: a real ejabberd on loopback.

Two accounts on one :class:`~xfer.testing.ejabberd.LocalEjabberd` (Debian's
package, its c2s shaper as shipped: 3000 B/s after a 20 kB burst, which IBB
data goes through) send each other files over each path - direct SOCKS5,
ejabberd's own proxy65 (the direct candidates unreachable), IBB (no proxy
either) - and the file that arrives is the one sent. OTR (the AKE and the
TLV 8 offer travel as ejabberd relays them), a declined offer and an
untrusted sender are refused as with Prosody. The fixture itself leaves no
Erlang process behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import xfer.xmpp.transfer as transfer_module
from tests.conftest import require_or_skip
from tests.integration.conftest import introduce
from xfer.errors import (
    AuthenticationFailed,
    TLSRequired,
    TransferDeclined,
    TransferRejected,
)
from xfer.otr.trust import Verification
from xfer.testing.certs import CertificateAuthority
from xfer.testing.ejabberd import (
    EjabberdUnavailable,
    LocalEjabberd,
    Shaper,
    ejabberd_available,
)
from xfer.testing.transports import forcing
from xfer.xmpp.client import XferClient, connect
from xfer.xmpp.transfer import SendResult

pytestmark = pytest.mark.integration

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw"}
KiB = 1 << 10
MiB = 1 << 20
#: Per path, a size that crosses the envelope's chunk boundary; IBB's stays
#: within what the stock shaper lets through in a few seconds.
SIZES = {"socks5-direct": 3 * MiB + 1, "socks5-proxy": 3 * MiB + 1, "ibb": 24 * KiB}


@pytest.fixture(scope="module")
def ejabberd() -> Iterator[LocalEjabberd]:
    require_or_skip(ejabberd_available(), "ejabberd (Debian package ejabberd)")
    with LocalEjabberd(accounts=dict(ACCOUNTS)) as server:
        yield server


async def peer(
    server: LocalEjabberd,
    user: str,
    resource: str,
    identity: Path,
    clients: list[XferClient],
    **config: object,
) -> XferClient:
    """``user`` on ejabberd with the whole xfer stack."""
    c = await connect(
        f"{user}@{server.domain}/{resource}",
        server.accounts[user],
        "127.0.0.1",
        server.c2s_port,
        tls="none",
    )
    clients.append(c)
    c.register_plugin(
        "xfer_transfer",
        {"identity": identity, "connect_timeout": 10.0, **config},
        module=transfer_module,
    )
    return c


async def pair(
    server: LocalEjabberd,
    tmp_path: Path,
    clients: list[XferClient],
    config: dict[str, object] | None = None,
    *,
    trust: bool = True,
) -> tuple[XferClient, XferClient]:
    a = await peer(
        server, "alice", "send", tmp_path / "a-id", clients, **(config or {})
    )
    b = await peer(server, "bob", "recv", tmp_path / "b-id", clients, **(config or {}))
    if trust:
        introduce(a, b)
    return a, b


async def transfer(
    a: XferClient, b: XferClient, src: Path, dest: Path
) -> tuple[Path, SendResult]:
    async def receive() -> Path:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=30)
        return await offer.accept(dest)

    got, result = await asyncio.gather(
        receive(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    )
    return got, result


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


@pytest.mark.parametrize("kind", list(SIZES))
async def test_a_file_over_each_path(
    ejabberd: LocalEjabberd, tmp_path: Path, clients: list[XferClient], kind: str
) -> None:
    a, b = await pair(ejabberd, tmp_path, clients, forcing(kind))
    src = tmp_path / f"{kind}.bin"
    src.write_bytes(os.urandom(SIZES[kind]))
    dest = tmp_path / "got.bin"
    got, result = await transfer(a, b, src, dest)
    assert got == dest
    assert result.transport == kind
    assert result.size == SIZES[kind]
    assert digest(dest) == digest(src)
    assert result.sha256 == digest(src)
    if kind == "socks5-proxy":
        # ejabberd's proxy65 names itself with a resource (proxy.DOMAIN/N).
        assert result.via.split("/")[0] == ejabberd.proxy_jid


async def test_both_ways_one_session(
    ejabberd: LocalEjabberd, tmp_path: Path, clients: list[XferClient]
) -> None:
    """OTR set up once carries offers both ways: bob answers alice's file
    with one of his own, over the same OTR session."""
    a, b = await pair(ejabberd, tmp_path, clients, forcing("socks5-direct"))
    there, back = tmp_path / "there.bin", tmp_path / "back.bin"
    there.write_bytes(os.urandom(100 * KiB))
    back.write_bytes(os.urandom(100 * KiB))
    inbox_a, inbox_b = tmp_path / "in-a", tmp_path / "in-b"
    inbox_a.mkdir()
    inbox_b.mkdir()
    got, _ = await transfer(a, b, there, inbox_b)
    ssid = a.plugin["xfer_otr"].secured(b.boundjid.full)[1].ssid
    got_back, _ = await transfer(b, a, back, inbox_a)
    assert got.read_bytes() == there.read_bytes()
    assert got_back.read_bytes() == back.read_bytes()
    assert a.plugin["xfer_otr"].secured(b.boundjid.full)[1].ssid == ssid


async def test_decline(
    ejabberd: LocalEjabberd, tmp_path: Path, clients: list[XferClient]
) -> None:
    a, b = await pair(ejabberd, tmp_path, clients)
    src = tmp_path / "unwanted.txt"
    src.write_bytes(b"not for you")

    async def refuse() -> None:
        offer = await b.plugin["xfer_transfer"].next_offer(timeout=20)
        await offer.decline("no thanks")

    with pytest.raises(TransferDeclined) as caught:
        await asyncio.gather(
            refuse(), a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
        )
    assert caught.value.reason == "decline"
    assert caught.value.text == "no thanks"


async def test_untrusted_sender_is_refused(
    ejabberd: LocalEjabberd, tmp_path: Path, clients: list[XferClient]
) -> None:
    """bob does not know alice's OTR fingerprint: her offer never reaches
    his user, and she is told why."""
    a, b = await pair(ejabberd, tmp_path, clients, trust=False)
    a_otr = a.plugin["xfer_otr"]
    b_key = b.plugin["xfer_otr"].account.private_key
    a_otr.trust.trust(
        b.boundjid.bare, b_key.public.fingerprint, Verification.MANUAL, now=0
    )
    src = tmp_path / "secret.txt"
    src.write_bytes(b"secret")
    with pytest.raises(TransferRejected) as caught:
        await a.plugin["xfer_transfer"].send_file(b.boundjid.full, src)
    assert caught.value.reason == "security-error"
    assert b.plugin["xfer_transfer"]._offers.empty()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in argv:
            found.append(f"{entry.name}: {argv}")
    return found


def _epmd_daemons() -> set[str]:
    """The running epmd processes (not the nodes whose command line names
    epmd, as every node of LocalEjabberd's does: ``-start_epmd false``; other
    test runs may start and stop those meanwhile)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if Path(argv0.decode(errors="replace")).name == "epmd":
            found.add(entry.name)
    return found


async def test_fixture_accounts_and_teardown(tmp_path: Path) -> None:
    """Accounts added while it runs can log in (a wrong password cannot);
    the node's cookie shows in no process's command line; stop() leaves no
    Erlang process of the node and no epmd it started."""
    require_or_skip(ejabberd_available(), "ejabberd (Debian package ejabberd)")
    epmd_before = _epmd_daemons()
    server = LocalEjabberd(domain="other.test", c2s_shaper=Shaper(10**6))
    with server:
        assert _processes_mentioning(server.node)
        # The cookie (whoever has it controls the node) is in no command line.
        assert _processes_mentioning(server.cookie) == []
        server.add_accounts({"carol": 'c"quote\\pw'})
        carol = await connect(
            "carol@other.test/r",
            'c"quote\\pw',
            "127.0.0.1",
            server.c2s_port,
            tls="none",
        )
        await carol.stop()
        with pytest.raises(AuthenticationFailed):
            await connect(
                "carol@other.test/r", "wrong", "127.0.0.1", server.c2s_port, tls="none"
            )
        node, directory = server.node, server.directory
    assert directory is not None
    assert not directory.exists()
    assert _processes_mentioning(node) == []
    assert _epmd_daemons() <= epmd_before


@pytest.mark.parametrize("certificate", ["generated", "given"])
async def test_tls_and_s2s_configuration(certificate: str, tmp_path: Path) -> None:
    """With TLS required, s2s on (as a federated deployment runs it) and a
    certificate from a throw-away CA (the fixture's own, or one given as
    files in a folder only their owner can read): STARTTLS and direct TLS log
    in with the CA, a client without TLS is told TLS is required, and the
    s2s listener requires STARTTLS."""
    require_or_skip(ejabberd_available(), "ejabberd (Debian package ejabberd)")
    files: dict[str, Path] = {}
    if certificate == "given":
        tmp_path.chmod(0o700)
        authority = CertificateAuthority("given CA")
        issued = authority.issue(["tls.test"], tmp_path, "tls.test")
        files = {
            "certificate": issued.certificate,
            "key": issued.key,
            "ca_file": authority.write(tmp_path / "ca.crt"),
        }
    accounts = {"dora": "dora-pw"}
    with LocalEjabberd(
        domain="tls.test",
        accounts=accounts,
        require_tls=True,
        direct_tls=True,
        s2s=True,
        s2s_tls=True,
        **files,  # type: ignore[arg-type]
    ) as server:
        if files:
            assert server.ca_file == files["ca_file"]
        assert server.ca_file is not None
        for mode, port in (
            ("starttls", server.c2s_port),
            ("direct", server.direct_tls_port),
        ):
            c = await connect(
                "dora@tls.test/r",
                "dora-pw",
                "127.0.0.1",
                port,
                tls=mode,
                ca_file=server.ca_file,
            )
            try:
                assert c.transport.get_extra_info("ssl_object") is not None
            finally:
                await c.stop()
        with pytest.raises(TLSRequired):
            await connect(
                "dora@tls.test/r", "dora-pw", "127.0.0.1", server.c2s_port, tls="none"
            )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.s2s_port)
        writer.write(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='tls.test' "
            b"from='remote.test' version='1.0'>"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 10)
        writer.close()
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in answer
        assert b"<required" in answer


def test_a_port_in_use_is_reported() -> None:
    """A c2s port asked for that is taken: start() fails with ejabberd's own
    reason (every attempt, by the same node, reaches the listener), and no
    Erlang process of it is left."""
    require_or_skip(ejabberd_available(), "ejabberd (Debian package ejabberd)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalEjabberd(c2s_port=taken.getsockname()[1])
        with pytest.raises(EjabberdUnavailable) as caught:
            server.start(timeout=20)
    assert "address already in use" in str(caught.value)
    assert "mismatch" not in str(caught.value)
    assert _processes_mentioning(server.node) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs it as another user")
def test_a_directory_the_ejabberd_user_cannot_reach_is_named(tmp_path: Path) -> None:
    """As root the VM runs as the ejabberd user: a directory below a folder
    closed to it is refused at once, naming that folder (ejabberd itself
    would fail with an unreadable file's error)."""
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    server = LocalEjabberd(directory=closed / "inner")
    with pytest.raises(EjabberdUnavailable, match="closed to other users"):
        server.start()
