"""``xfer demo``: a real encrypted transfer between two accounts, on this machine.

It starts a throw-away Prosody on loopback with two fresh accounts, gives
each its own xfer identity, lets them trust each other with ``xfer keys`` and
``xfer trust``, then runs ``xfer receive`` and ``xfer send`` as two separate
processes, exactly as two people would, and checks the received file's
SHA-256. Everything is removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from xfer_cli.main import CommandError
from xfer_cli.params import SizeType
from xfer_cli.progress import format_bytes

from xfer.testing.prosody import LocalProsody, prosody_available

INSTALL_HINT = (
    "Prosody, the XMPP server the demo runs, is not installed: "
    "'apt-get install prosody' (Debian/Ubuntu) - or run 'bash scripts/demo', "
    "which installs everything"
)


def _xfer(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    """Run ``xfer ARGS --json`` to completion; its JSON events."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "xfer_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        msg = f"'xfer {' '.join(args)}' failed: {done.stderr.strip()}"
        raise CommandError(msg)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def _environments(
    server: LocalProsody, passwords: dict[str, str], work: Path
) -> dict[str, dict[str, str]]:
    """Each account's environment: its JID and password, the local server,
    and its own data directory (no user config file is read)."""
    return {
        name: {
            **os.environ,
            "XFER_JID": f"{name}@{server.domain}/demo",
            "XFER_PASSWORD": password,
            "XFER_HOST": "127.0.0.1",
            "XFER_PORT": str(server.c2s_port),
            "XFER_TLS": "none",  # loopback only: a local test server
            "XFER_DATA_DIR": str(work / f"{name}-data"),
            "XFER_CONFIG": str(work / "no-config.toml"),
        }
        for name, password in passwords.items()
    }


def _introduce(envs: dict[str, dict[str, str]], domain: str) -> dict[str, str]:
    """'xfer keys' on both sides, then each 'xfer trust's the other."""
    fingerprints = {}
    for name, env in envs.items():
        (event,) = _xfer(env, "keys", "--json")
        fingerprints[name] = str(event["fingerprint"])
    _xfer(envs["alice"], "trust", f"bob@{domain}", fingerprints["bob"])
    _xfer(envs["bob"], "trust", f"alice@{domain}", fingerprints["alice"])
    return fingerprints


def _random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes; return their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 1 << 20))
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _transfer(
    envs: dict[str, dict[str, str]], domain: str, original: Path, inbox: Path
) -> tuple[dict[str, object], dict[str, object]]:
    """bob runs 'xfer receive --once', alice 'xfer send': their final events."""
    receiver = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "xfer_cli",
            "receive",
            "--once",
            "--yes",
            "--dir",
            str(inbox),
            "--json",
        ],
        env=envs["bob"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        ready = json.loads(receiver.stdout.readline() or "{}")
        if ready.get("event") != "ready":
            err = receiver.stderr.read() if receiver.stderr else ""
            raise CommandError(f"the receiver did not start: {err.strip()}")
        events = _xfer(
            envs["alice"], "send", str(original), "--to", f"bob@{domain}", "--json"
        )
        (sent,) = [e for e in events if e["event"] == "sent"]
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    if receiver.returncode != 0:
        raise CommandError(f"the receiver failed: {err.strip()}")
    got = [json.loads(line) for line in out.splitlines() if line.strip()]
    (received,) = [e for e in got if e["event"] == "received"]
    return sent, received


@click.command()
@click.option(
    "--size",
    type=SizeType(),
    default="64M",
    show_default=True,
    help="Size of the generated file.",
)
def demo(size: int) -> None:
    """Show a real end-to-end encrypted transfer, all on this machine.

    Starts a throw-away Prosody (Debian's package) on 127.0.0.1 with two new
    accounts, alice and bob; each gets its own OTR key and trusts the other's
    fingerprint; bob runs 'xfer receive' and alice 'xfer send' as separate
    processes. Prints the fingerprints, the transport, the speed and the
    SHA-256 check, then removes everything.
    """
    if not prosody_available():
        raise CommandError(INSTALL_HINT)
    say = click.echo
    with tempfile.TemporaryDirectory(prefix="xfer-demo-") as tmp:
        work = Path(tmp)
        passwords = {name: secrets.token_urlsafe(12) for name in ("alice", "bob")}
        say("starting a throw-away Prosody on 127.0.0.1 ...")
        with LocalProsody(accounts=dict(passwords)) as server:
            domain = server.domain
            envs = _environments(server, passwords, work)
            say(f"accounts alice@{domain} and bob@{domain}, port {server.c2s_port}")
            fingerprints = _introduce(envs, domain)
            for name, fingerprint in fingerprints.items():
                say(f"{name}'s OTR fingerprint: {fingerprint}")
            say(
                "each trusts the other's fingerprint ('xfer trust'; for real: "
                "compare them in person, or run 'xfer verify')"
            )
            original = work / "demo-file.bin"
            digest = _random_file(original, size)
            say(
                f"bob waits ('xfer receive'); alice sends a {format_bytes(size)} "
                "file ('xfer send') ..."
            )
            started = time.perf_counter()
            sent, received = _transfer(envs, domain, original, work / "bob-inbox")
            elapsed = time.perf_counter() - started
            saved = Path(str(received["path"]))
            seconds = float(str(sent["seconds"]))
            say(
                f"transport: {sent['transport']}; {format_bytes(size)} in "
                f"{seconds:.2f} s ({size / max(seconds, 1e-9) / 1e6:.0f} MB/s; "
                f"{elapsed:.2f} s for both commands, with log-in and OTR set-up)"
            )
            if _sha256(saved) != digest:
                raise CommandError("the received file differs from the original!")
            say(f"SHA-256 verified: {digest} (identical)")
            say(
                "the server relayed only ciphertext: the name, size and hash "
                f"travelled inside OTR; bob saved {saved.name}"
            )
        say("stopped Prosody; removed the accounts, keys and files")
