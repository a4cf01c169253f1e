"""TLS to a real Prosody on loopback, with a throw-away CA.

STARTTLS and direct TLS work with the CA given as ``ca_file``; a certificate
from a CA we do not trust, or for another name, a server without TLS, and a
server that requires TLS against ``tls="none"`` each fail at once with their
own typed error (well before the 30 s "did not answer" of a silent server),
and without a password sent; the command line maps each to its exit code.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import xfer
from tests.conftest import require_or_skip
from xfer.errors import CertificateUntrusted, TLSNotOffered, TLSRequired
from xfer.testing.certs import CertificateAuthority
from xfer.testing.prosody import LocalProsody, prosody_available
from xfer.xmpp.client import XferClient

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw"}
#: A failure must be reported long before the start's 30 s timeout: this
#: bounds correctness (no waiting for a timeout), not speed.
PROMPT = 10.0


def _server(**tls: object) -> Iterator[LocalProsody]:
    require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    with LocalProsody(accounts=dict(ACCOUNTS), **tls) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture(scope="module")
def tls_server() -> Iterator[LocalProsody]:
    """STARTTLS offered (not required), and a direct TLS port."""
    yield from _server(tls=True, direct_tls=True)


@pytest.fixture(scope="module")
def strict_server() -> Iterator[LocalProsody]:
    """No login without TLS (c2s_require_encryption)."""
    yield from _server(require_tls=True)


@pytest.fixture(scope="module")
def misnamed_server() -> Iterator[LocalProsody]:
    """A certificate from its CA, but for another name."""
    yield from _server(tls=True, certificate_names=("elsewhere.example",))


@pytest.fixture(scope="module")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed none of the servers' certificates."""
    return CertificateAuthority("rogue CA").write(
        tmp_path_factory.mktemp("rogue") / "rogue.pem"
    )


async def _start(
    server: LocalProsody, *, port: int | None = None, **settings: object
) -> XferClient:
    client = XferClient(
        f"alice@{server.domain}/tls",
        ACCOUNTS["alice"],
        **settings,  # type: ignore[arg-type]
    )
    await client.start("127.0.0.1", port or server.c2s_port)
    return client


async def _fails(
    server: LocalProsody,
    error: type[Exception],
    *,
    port: int | None = None,
    **kw: object,
) -> Exception:
    client = XferClient(f"alice@{server.domain}/tls", ACCOUNTS["alice"], **kw)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(error) as caught:
        await client.start("127.0.0.1", port or server.c2s_port)
    assert time.monotonic() - started < PROMPT
    return caught.value


async def test_starttls_with_the_ca_file_moves_a_file(
    tls_server: LocalProsody, tmp_path: Path
) -> None:
    async def login(name: str) -> xfer.Client:
        return await xfer.connect(
            f"{name}@{tls_server.domain}/tls",
            ACCOUNTS[name],
            identity=tmp_path / name,
            host="127.0.0.1",
            port=tls_server.c2s_port,
            tls="starttls",
            ca_file=tls_server.ca_file,
        )

    alice, bob = await login("alice"), await login("bob")
    try:
        for who in (alice, bob):
            ssl_object = who.xmpp.transport.get_extra_info("ssl_object")
            assert ssl_object is not None
            assert ssl_object.getpeercert()["subject"] == (
                (("commonName", tls_server.domain),),
            )
        alice.trust(bob.jid, bob.fingerprint)
        bob.trust(alice.jid, alice.fingerprint)
        (tmp_path / "note.txt").write_bytes(b"over STARTTLS\n" * 1000)
        (tmp_path / "inbox").mkdir()

        async def receive() -> Path:
            offer = await bob.next_offer()
            return await offer.accept(tmp_path / "inbox")

        saved, _ = await asyncio.wait_for(
            asyncio.gather(receive(), alice.send_file(bob.jid, tmp_path / "note.txt")),
            60,
        )
        assert saved.read_bytes() == b"over STARTTLS\n" * 1000
    finally:
        await alice.close()
        await bob.close()


async def test_direct_tls_on_its_port(tls_server: LocalProsody) -> None:
    client = await _start(
        tls_server,
        port=tls_server.direct_tls_port,
        tls="direct",
        ca_file=tls_server.ca_file,
    )
    try:
        assert client.transport.get_extra_info("ssl_object") is not None
        assert client.boundjid.bare == f"alice@{tls_server.domain}"
    finally:
        await client.stop()


async def test_starttls_required_by_the_server_works(
    strict_server: LocalProsody,
) -> None:
    client = await _start(strict_server, tls="starttls", ca_file=strict_server.ca_file)
    try:
        assert client.transport.get_extra_info("ssl_object") is not None
    finally:
        await client.stop()


@pytest.mark.parametrize("mode", ["starttls", "direct"])
async def test_an_unknown_ca_is_reported_at_once_with_names_and_issuer(
    tls_server: LocalProsody, rogue_ca: Path, mode: str
) -> None:
    port = tls_server.direct_tls_port if mode == "direct" else None
    error = await _fails(
        tls_server, CertificateUntrusted, port=port, tls=mode, ca_file=rogue_ca
    )
    assert isinstance(error, CertificateUntrusted)
    assert error.server == tls_server.domain
    assert "issuer" in error.reason
    assert error.names == (tls_server.domain,)
    assert error.issuer == f"xfer test CA for {tls_server.domain}"
    assert f"issued by xfer test CA for {tls_server.domain}" in str(error)


async def test_the_system_store_does_not_trust_a_private_ca(
    tls_server: LocalProsody,
) -> None:
    await _fails(tls_server, CertificateUntrusted, tls="starttls")


async def test_a_certificate_for_another_name_is_a_mismatch(
    misnamed_server: LocalProsody,
) -> None:
    error = await _fails(
        misnamed_server,
        CertificateUntrusted,
        tls="starttls",
        ca_file=misnamed_server.ca_file,
    )
    assert isinstance(error, CertificateUntrusted)
    assert "mismatch" in error.reason.lower()
    assert error.names == ("elsewhere.example",)
    assert "it is for elsewhere.example" in str(error)


async def test_starttls_against_a_server_without_tls(
    prosody: LocalProsody,
) -> None:
    error = await _fails(prosody, TLSNotOffered, tls="starttls")
    assert "offers no TLS" in str(error)
    assert "refused the password" not in str(error)


async def test_direct_tls_against_a_plain_port(tls_server: LocalProsody) -> None:
    error = await _fails(
        tls_server, TLSNotOffered, tls="direct", ca_file=tls_server.ca_file
    )
    assert "does not speak direct TLS" in str(error)


async def test_no_tls_against_a_server_that_requires_it(
    strict_server: LocalProsody,
) -> None:
    error = await _fails(strict_server, TLSRequired, tls="none")
    assert "requires TLS" in str(error)


async def test_no_tls_against_a_server_that_only_offers_it_logs_in(
    tls_server: LocalProsody,
) -> None:
    # Offered is not required: a plain login (a local test server) still
    # works, and the STARTTLS offered again after it is no refusal.
    client = await _start(tls_server, tls="none")
    try:
        assert client.transport.get_extra_info("ssl_object") is None
        assert client.boundjid.bare == f"alice@{tls_server.domain}"
    finally:
        await client.stop()


# The command line: each failure its one line and exit code.


def _xfer(
    server: LocalProsody, home: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "XFER_JID": f"alice@{server.domain}/cli",
        "XFER_PASSWORD": ACCOUNTS["alice"],
        "XFER_HOST": "127.0.0.1",
        "XFER_PORT": str(server.c2s_port),
        "XFER_DATA_DIR": str(home / "data"),
        "XFER_CONFIG": str(home / "no-config.toml"),
    }
    environment.pop("XFER_TLS", None)
    environment.pop("XFER_CA_FILE", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "xfer_cli", "send", "--to", "bob@xfer.test", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_exit_codes_for_tls_failures(
    tls_server: LocalProsody,
    strict_server: LocalProsody,
    prosody: LocalProsody,
    rogue_ca: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "f.txt").write_text("x")
    file = str(tmp_path / "f.txt")

    done = _xfer(tls_server, tmp_path, file, "--ca-file", str(rogue_ca))
    assert done.returncode == 13, done.stderr
    line = _one_line(done)
    assert "not trusted" in line
    assert f"issued by xfer test CA for {tls_server.domain}" in line
    assert "--ca-file" in line

    done = _xfer(prosody, tmp_path, file)
    assert done.returncode == 14, done.stderr
    assert "offers no TLS" in _one_line(done)

    done = _xfer(strict_server, tmp_path, file, XFER_TLS="none")
    assert done.returncode == 15, done.stderr
    assert "requires TLS" in _one_line(done)

    # The CA from the environment is trusted: the login works, and the
    # send stops only at the peer (bob is not online): exit 9, not 13.
    done = _xfer(tls_server, tmp_path, file, XFER_CA_FILE=str(tls_server.ca_file))
    assert done.returncode == 9, done.stderr


def test_cli_direct_tls_with_the_ca_file_from_the_config(
    tls_server: LocalProsody, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'ca_file = "{tls_server.ca_file}"\n')
    (tmp_path / "f.txt").write_text("x")
    done = _xfer(
        tls_server,
        tmp_path,
        str(tmp_path / "f.txt"),
        XFER_CONFIG=str(config),
        XFER_TLS="direct",
        XFER_PORT=str(tls_server.direct_tls_port),
    )
    # Logged in over direct TLS; the send stops at the peer (bob is offline).
    assert done.returncode == 9, done.stderr
