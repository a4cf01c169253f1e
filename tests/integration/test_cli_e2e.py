"""The command line end to end: real processes, a real Prosody, real OTR.

Each test runs ``xfer`` as a user would (``python -m xfer_cli``), with the
account in environment variables and a private data directory per person.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ACCOUNTS, login
from tests.integration.test_notices import PlainPeer
from xfer.otr.messages import WHITESPACE_BASE, WHITESPACE_V2
from xfer.testing.prosody import LocalProsody
from xfer.xmpp.delay import is_delayed
from xfer.xmpp.versions import reply_text

pytestmark = pytest.mark.integration


class Person:
    """One user of the command line: an account and a data directory."""

    def __init__(self, name: str, server: LocalProsody, home: Path) -> None:
        self.name = name
        self.jid = f"{name}@{server.domain}"
        self.env = {
            **os.environ,
            "XFER_JID": f"{self.jid}/cli",
            "XFER_PASSWORD": ACCOUNTS[name],
            "XFER_HOST": "127.0.0.1",
            "XFER_PORT": str(server.c2s_port),
            "XFER_TLS": "none",
            "XFER_DATA_DIR": str(home / f"{name}-data"),
            "XFER_CONFIG": str(home / "no-config.toml"),
        }

    def run(
        self, *args: str, stdin: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xfer_cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, stdin: str = "") -> subprocess.Popen[str]:
        """Start ``xfer ARGS`` in the background; ``stdin`` is all its input."""
        read_end, write_end = os.pipe()
        os.write(write_end, stdin.encode())
        os.close(write_end)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "xfer_cli", *args],
                env=self.env,
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            os.close(read_end)

    def fingerprint(self) -> str:
        done = self.run("keys", "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["fingerprint"])

    def trusts(self, other: Person) -> None:
        done = self.run("trust", other.jid, other.fingerprint())
        assert done.returncode == 0, done.stderr


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    assert json.loads(line)["event"] == "ready"


def finish(
    proc: subprocess.Popen[str], *, received: int = 0, timeout: float = 30
) -> tuple[str, str]:
    """Stop a receiver (Ctrl-C) once it reported ``received`` files; its
    whole stdout and stderr. (A sender's call returns when the receiver has
    verified the file, a moment before the receiver prints so.)"""
    seen: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while sum('"received"' in line for line in seen) < received:
        if time.monotonic() > deadline or proc.poll() is not None:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
    if proc.poll() is None and "--once" not in proc.args:  # type: ignore[operator]
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a client behind for the next test
        out, err = proc.communicate()
        raise
    return "".join(seen) + out, err


def events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def people(prosody: LocalProsody, tmp_path: Path) -> tuple[Person, Person]:
    return Person("alice", prosody, tmp_path), Person("bob", prosody, tmp_path)


@pytest.fixture
def friends(people: tuple[Person, Person]) -> tuple[Person, Person]:
    alice, bob = people
    alice.trusts(bob)
    bob.trusts(alice)
    return alice, bob


def test_send_files_and_a_directory_tree(
    friends: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, bob = friends
    (tmp_path / "one.txt").write_bytes(os.urandom(1000))
    tree = tmp_path / "album"
    (tree / "2024" / "summer").mkdir(parents=True)
    (tree / "cover.jpg").write_bytes(os.urandom(5000))
    (tree / "2024" / "summer" / "beach.jpg").write_bytes(os.urandom(300_000))
    (tree / "2024" / "empty.txt").write_bytes(b"")
    inbox = tmp_path / "inbox"
    receiver = bob.start("receive", "--yes", "--dir", str(inbox), "--json")
    try:
        wait_ready(receiver)
        sent = alice.run(
            "send", str(tmp_path / "one.txt"), str(tree), "--to", bob.jid, "--json"
        )
    finally:
        out, _ = finish(receiver, received=4)
    assert sent.returncode == 0, sent.stderr
    names = sorted(str(e["name"]) for e in events(sent.stdout) if e["event"] == "sent")
    assert names == [
        "album/2024/empty.txt",
        "album/2024/summer/beach.jpg",
        "album/cover.jpg",
        "one.txt",
    ]
    for name in names:
        source = tmp_path / name
        assert (inbox / name).read_bytes() == source.read_bytes()
    received = [e for e in events(out) if e["event"] == "received"]
    assert len(received) == 4
    # Ctrl-C while waiting is how a receiver is stopped: not an error.
    assert receiver.returncode == 0
    assert events(out)[-1]["event"] == "stopped"


def test_decline(friends: tuple[Person, Person], tmp_path: Path) -> None:
    alice, bob = friends
    (tmp_path / "unwanted.bin").write_bytes(b"x" * 100)
    inbox = tmp_path / "inbox"
    receiver = bob.start(
        "receive", "--once", "--dir", str(inbox), "--json", stdin="n\n"
    )
    try:
        wait_ready(receiver)
        sent = alice.run("send", str(tmp_path / "unwanted.bin"), "--to", bob.jid)
    finally:
        out, _ = finish(receiver)
    assert sent.returncode == 6
    assert "declined" in sent.stderr
    assert list(inbox.iterdir()) == []
    assert [e["event"] for e in events(out)][-1] == "declined"


def test_untrusted_peers(people: tuple[Person, Person], tmp_path: Path) -> None:
    alice, bob = people
    (tmp_path / "f.txt").write_text("hello")
    # alice does not trust bob: she refuses to send, saying how to fix it.
    sent = alice.run("send", str(tmp_path / "f.txt"), "--to", bob.jid, timeout=60)
    # (bob is offline: alice cannot even start OTR.)
    assert sent.returncode == 9, sent.stderr
    receiver = bob.start(
        "receive", "--yes", "--once", "--dir", str(tmp_path / "in"), "--json"
    )
    try:
        wait_ready(receiver)
        sent = alice.run("send", str(tmp_path / "f.txt"), "--to", bob.jid)
        assert sent.returncode == 7, sent.stderr
        assert "not trusted" in sent.stderr
        assert "xfer trust" in sent.stderr
        # alice trusts bob, bob does not trust alice: --yes declines her.
        alice.trusts(bob)
        sent = alice.run("send", str(tmp_path / "f.txt"), "--to", bob.jid)
        assert sent.returncode == 6, sent.stderr
        assert "untrusted" in sent.stderr
    finally:
        finish(receiver)
    assert not (tmp_path / "in").exists() or list((tmp_path / "in").iterdir()) == []


@pytest.mark.parametrize(("secret_b", "code"), [("blue whale", 0), ("red fox", 7)])
def test_verify_with_smp(
    people: tuple[Person, Person], secret_b: str, code: int
) -> None:
    alice, bob = people
    a = alice.start(
        "verify", bob.jid, "--question", "our colour?", stdin="blue whale\n"
    )
    b = bob.start("verify", alice.jid, stdin=f"{secret_b}\n")
    _, a_err = a.communicate(timeout=90)
    _, b_err = b.communicate(timeout=90)
    assert (a.returncode, b.returncode) == (code, code), (a_err, b_err)
    for person, other in ((alice, bob), (bob, alice)):
        listed = json.loads(person.run("keys", "--json").stdout)["trusted"]
        if code == 0:
            assert listed == [
                {"fingerprint": other.fingerprint(), "how": "smp", "jid": other.jid}
            ]
        else:
            assert listed == []
    if code:
        assert "FAILED" in a_err


def verify_both(
    alice: Person, bob: Person, secret_b: str
) -> tuple[subprocess.Popen[str], str, subprocess.Popen[str], str]:
    """alice asks, bob answers with ``secret_b``: both processes, stderrs."""
    a = alice.start(
        "verify", bob.jid, "--question", "our colour?", stdin="blue whale\n"
    )
    b = bob.start("verify", alice.jid, stdin=f"{secret_b}\n")
    _, a_err = a.communicate(timeout=90)
    _, b_err = b.communicate(timeout=90)
    return a, a_err, b, b_err


def trusted(person: Person) -> list[dict[str, str]]:
    listed: list[dict[str, str]] = json.loads(person.run("keys", "--json").stdout)[
        "trusted"
    ]
    return listed


def test_a_failed_verify_takes_back_an_earlier_trust_and_send_stops(
    people: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, bob = people
    a, a_err, b, b_err = verify_both(alice, bob, "blue whale")
    assert (a.returncode, b.returncode) == (0, 0), (a_err, b_err)
    assert [e["how"] for e in trusted(alice)] == ["smp"]
    a, a_err, b, b_err = verify_both(alice, bob, "red fox")
    assert (a.returncode, b.returncode) == (7, 7), (a_err, b_err)
    for err, other in ((a_err, bob), (b_err, alice)):
        assert "FAILED" in err
        assert f"its fingerprint {other.fingerprint()} is no longer trusted" in err
    # What was printed is what is stored, and alice no longer sends to bob.
    assert trusted(alice) == trusted(bob) == []
    (tmp_path / "f.txt").write_text("hello")
    receiver = bob.start("receive", "--dir", str(tmp_path / "in"), "--json")
    try:
        wait_ready(receiver)
        sent = alice.run("send", str(tmp_path / "f.txt"), "--to", bob.jid)
    finally:
        finish(receiver)
    assert sent.returncode == 7, sent.stderr
    assert "is not trusted" in sent.stderr


def test_verify_honours_its_timeout_on_both_sides(
    friends: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, bob = friends
    # bob is online but not verifying: alice (who asks) gets no answer.
    receiver = bob.start("receive", "--dir", str(tmp_path / "in"), "--json")
    try:
        wait_ready(receiver)
        started = time.monotonic()
        asked = alice.run("verify", bob.jid, "--timeout", "3", stdin="blue whale\n")
        took = time.monotonic() - started
    finally:
        finish(receiver)
    assert asked.returncode == 12, asked.stderr
    assert f"no answer from {bob.jid}/cli within 3 s" in asked.stderr
    assert "broke off" not in asked.stderr
    assert took < 30
    # alice is online but not verifying: bob (who answers) gets no question.
    receiver = alice.start("receive", "--dir", str(tmp_path / "in"), "--json")
    try:
        wait_ready(receiver)
        waited = bob.run("verify", alice.jid, "--timeout", "3", stdin="blue whale\n")
    finally:
        finish(receiver)
    assert waited.returncode == 12, waited.stderr
    assert f"{alice.jid}/cli did not ask to verify within 3 s" in waited.stderr
    # Trust is as it was.
    assert [e["how"] for e in trusted(alice)] == ["manual"]
    assert [e["how"] for e in trusted(bob)] == ["manual"]


def test_verify_given_up_by_the_peer_is_an_abort(
    friends: tuple[Person, Person],
) -> None:
    alice, bob = friends
    # bob shows alice's question and waits for his secret, which comes only
    # after alice gave up waiting (her --timeout): his verification was
    # aborted by her, which is no failure, and trust stays as it was. Her
    # timeout must outlast her first SMP step and bob's showing it (both
    # start an SMP worker process): bob shows it 0.8 s after alice's command
    # starts on an idle machine, a few times that on a loaded one.
    b = subprocess.Popen(
        [sys.executable, "-m", "xfer_cli", "verify", alice.jid],
        env=bob.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert b.stderr is not None
        a = alice.start(
            "verify", bob.jid, "--timeout", "10", "--question", "q?", stdin="s\n"
        )
        seen = ""
        while " asks: " not in seen:
            line = b.stderr.readline()
            assert line, seen
            seen += line
        _, a_err = a.communicate(timeout=60)
        assert a.returncode == 12, a_err
        _, b_err = b.communicate("blue whale\n", timeout=60)
    finally:
        if b.poll() is None:
            b.kill()
            b.communicate()
    assert b.returncode == 11, seen + b_err
    assert f"the verification of {alice.jid}/cli was aborted before the end" in b_err
    assert f"its fingerprint {alice.fingerprint()} is still trusted" in b_err
    assert "FAILED" not in b_err
    assert [e["how"] for e in trusted(alice)] == ["manual"]
    assert [e["how"] for e in trusted(bob)] == ["manual"]


def test_wrong_password_and_unreachable_server(
    people: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, _ = people
    alice.env["XFER_PASSWORD"] = "not-the-password"
    done = alice.run("receive", "--once")
    assert done.returncode == 8
    assert "password" in done.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    alice.env["XFER_PORT"] = str(closed)
    done = alice.run("receive", "--once")
    assert done.returncode == 8
    assert "cannot connect to the XMPP server" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


HOSTILE = [
    ("../../escape.txt", "escape.txt"),
    ("/etc/passwd", "etc/passwd"),
    ("..\\..\\windows.ini", "windows.ini"),
    ("bell\x07and\x1b[31mred\nnewline.txt", "belland[31mrednewline.txt"),
    ("CON", "_CON"),
    ("aux.txt", "_aux.txt"),
    (".hidden", "hidden"),
    ("x" * 1000 + ".txt", "x" * 251 + ".txt"),
]


def test_hostile_names_are_neutralised(
    prosody: LocalProsody, friends: tuple[Person, Person], tmp_path: Path
) -> None:
    """A peer (the library, not the CLI) offers files under hostile names;
    'xfer receive' keeps each inside its directory under a harmless name."""
    import xfer

    alice, bob = friends
    inbox = tmp_path / "deep" / "inbox"
    receiver = bob.start("receive", "--yes", "--dir", str(inbox), "--json")

    async def attack() -> None:
        client = await xfer.connect(
            f"{alice.jid}/attacker",
            ACCOUNTS["alice"],
            identity=alice.env["XFER_DATA_DIR"],
            host="127.0.0.1",
            port=prosody.c2s_port,
            tls="none",
        )
        try:
            payload = tmp_path / "payload.bin"
            payload.write_bytes(b"payload")
            for name, _ in HOSTILE:
                await client.send_file(f"{bob.jid}/cli", payload, name=name)
        finally:
            await client.close()

    try:
        wait_ready(receiver)
        asyncio.run(attack())
    finally:
        out, err = finish(receiver, received=len(HOSTILE))
    saved = sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())
    assert saved == sorted(expected for _, expected in HOSTILE), err
    assert len([e for e in events(out) if e["event"] == "received"]) == len(HOSTILE)
    # Nothing was written anywhere else: only the payload and the two
    # people's key and trust files exist outside the inbox.
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and inbox not in p.parents]
    assert all(
        p.name == "payload.bin" or p.parent.name.endswith("-data") for p in outside
    ), outside


def test_a_killed_receiver_resumes_where_it_stopped(
    friends: tuple[Person, Person], tmp_path: Path
) -> None:
    """kill -9 of 'xfer receive' mid-file: the sender keeps offering the
    rest, a new 'xfer receive' finds the verified prefix (and its state
    file) beside the destination and asks only for the rest."""
    alice, bob = friends
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with src.open("wb") as f:
        for i in range(192):
            f.write(block[i:] + block[:i])
    inbox = tmp_path / "inbox"
    first = bob.start("receive", "--yes", "--dir", str(inbox), "--json")
    sender = None
    try:
        wait_ready(first)
        sender = alice.start("send", str(src), "--to", bob.jid, "--json")
        # Wait until the receiver recorded a verified prefix on the disk.
        deadline = time.monotonic() + 60
        while not list(inbox.glob(".*.xfer-state")):
            assert time.monotonic() < deadline, "no partial state appeared"
            assert first.poll() is None
            assert sender.poll() is None
            time.sleep(0.005)
        first.kill()
        first.communicate(timeout=10)
        assert not (inbox / "big.bin").exists()
        kept = json.loads(next(inbox.glob(".*.xfer-state")).read_text())
        assert 0 < kept["verified"] < src.stat().st_size
        second = bob.start("receive", "--yes", "--once", "--dir", str(inbox), "--json")
        out, err = finish(second, received=1, timeout=120)
        sent_out, sent_err = sender.communicate(timeout=60)
    finally:
        for proc in (first, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert second.returncode == 0, err
    assert sender.returncode == 0, sent_err
    assert (inbox / "big.bin").read_bytes() == src.read_bytes()
    resuming = [e for e in events(out) if e["event"] == "resuming"]
    assert resuming
    assert int(str(resuming[0]["kept"])) >= kept["verified"]
    sent = [e for e in events(sent_out) if e["event"] == "sent"]
    assert sent[0]["breaks"] >= 1
    assert int(str(sent[0]["resumed_from"])) >= kept["verified"]
    assert sorted(p.name for p in inbox.iterdir()) == ["big.bin"]


def test_verify_ignores_another_peers_question(
    prosody: LocalProsody, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """Carol starts a verification with Bob first, asking as if she were
    Alice; Bob's 'xfer verify alice' leaves her question queued, shows and
    answers only Alice's."""
    import xfer
    from xfer.otr.trust import SMPResult

    alice, bob = people
    b = bob.start("verify", alice.jid, stdin="blue whale\n")

    async def carol_asks_then_alice_verifies() -> tuple[str, str]:
        carol = await xfer.connect(
            f"carol@{prosody.domain}/mallory",
            ACCOUNTS["carol"],
            identity=tmp_path / "carol-data",
            host="127.0.0.1",
            port=prosody.c2s_port,
            tls="none",
            accept_untrusted=True,
        )
        try:
            otr = carol.xmpp.plugin["xfer_otr"]
            deadline = time.monotonic() + 30
            while True:  # until Bob's client is online
                try:
                    await otr.secure(f"{bob.jid}/cli", timeout=3)
                    break
                except xfer.XferError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            lure = asyncio.create_task(
                carol.verify(f"{bob.jid}/cli", "guess", question="Alice here: PIN?")
            )
            await asyncio.sleep(1)  # Carol's question is queued at Bob's first
            a = alice.start(
                "verify", bob.jid, "--question", "our colour?", stdin="blue whale\n"
            )
            _, a_err = await asyncio.to_thread(a.communicate, timeout=90)
            _, b_err = await asyncio.to_thread(b.communicate, timeout=90)
            assert (a.returncode, b.returncode) == (0, 0), (a_err, b_err)
            # Nobody answered Carol: her exchange is still open, or was
            # aborted when Bob's 'xfer verify' ended its conversations.
            assert not lure.done() or lure.result() is SMPResult.ABORTED
            lure.cancel()
            return a_err, b_err
        finally:
            await carol.close()

    try:
        _, b_err = asyncio.run(carol_asks_then_alice_verifies())
    finally:
        if b.poll() is None:
            b.kill()
            b.communicate()
    assert f"{alice.jid}/cli asks: 'our colour?'" in b_err
    assert "PIN" not in b_err
    listed = json.loads(bob.run("keys", "--json").stdout)["trusted"]
    assert [entry["jid"] for entry in listed] == [alice.jid]


def test_receive_shows_what_else_peers_send(
    prosody: LocalProsody, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """Another XMPP client (plain slixmpp, its OTR driven by the test) offers
    a file by legacy stream initiation and by plain Jingle, and says
    something inside OTR: 'xfer receive' refuses both offers and shows each
    of the three on one escaped line."""
    _, bob = people
    receiver = bob.start("receive", "--dir", str(tmp_path / "inbox"))
    assert receiver.stderr is not None
    assert receiver.stderr.readline().startswith("waiting for files as ")

    async def carol_sends() -> str:
        peer = PlainPeer(await login(prosody, "carol", "plain"))
        try:
            to = f"{bob.jid}/cli"
            error = await peer.si_offer(to, "x\u202efdp.exe", 1_234_567)
            assert (
                error.iq["error"]["text"]
                == "xfer accepts only end-to-end encrypted files"
            )
            await peer.jingle_offer(to, "y.pdf", 2_000_000)
            await peer.say(to, "hi\x1b[2J\r\nfake line")
            return peer.jid
        finally:
            await peer.xmpp.stop()

    lines: list[str] = []
    try:
        carol = asyncio.run(carol_sends())
        deadline = time.monotonic() + 30
        while len(lines) < 3 and time.monotonic() < deadline:
            line = receiver.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        _, err = finish(receiver)
    assert lines == [
        f"{carol} offered 'x\\u202efdp.exe' (1.2 MiB) unencrypted; "
        "refused: xfer accepts only end-to-end encrypted files",
        f"{carol} offered 'y.pdf' (1.9 MiB) unencrypted; "
        "refused: xfer accepts only end-to-end encrypted files",
        f"{carol} says (in OTR, fingerprint NOT TRUSTED): "
        "hi\\x1b[2J\\x0d\\x0afake line",
    ], err
    assert receiver.returncode == 0


def test_receive_tells_a_client_with_old_otr(
    prosody: LocalProsody, people: tuple[Person, Person], tmp_path: Path
) -> None:
    """Carol's chat client speaks OTR version 2 only. Her first message
    carries its whitespace tag, then she asks for a private conversation:
    Bob's 'xfer receive' reports her once, and she gets one plain answer
    that says why nothing happens."""
    _, bob = people
    receiver = bob.start("receive", "--json", "--dir", str(tmp_path / "in"))
    wait_ready(receiver)

    async def carol_writes() -> list[str]:
        carol = await login(prosody, "carol", "pidgin")
        got: list[str] = []
        answered = asyncio.Event()

        def on_message(msg: Any) -> None:
            if is_delayed(msg.xml):
                return  # stored for carol by an earlier test (offline storage)
            got.append(str(msg["body"]))
            answered.set()

        carol.add_event_handler("message", on_message)
        try:
            for text in ("hello" + WHITESPACE_BASE + WHITESPACE_V2, "?OTRv2?"):
                carol.send_message(mto=f"{bob.jid}/cli", mbody=text, mtype="chat")
            await asyncio.wait_for(answered.wait(), 30)
            await asyncio.sleep(1)  # a second answer would be here by now
            return got
        finally:
            await carol.stop()

    try:
        answers = asyncio.run(carol_writes())
    finally:
        out, err = finish(receiver)
    assert answers == [reply_text({2})]
    reports = [e for e in events(out) if e["event"] == "unsupported"]
    assert [(e["peer"], e["versions"]) for e in reports] == [
        (f"carol@{prosody.domain}/pidgin", [2])
    ], err


def test_both_sides_say_which_path_the_data_took(
    friends: tuple[Person, Person], tmp_path: Path
) -> None:
    """The receiver's "saved" line names the path as the sender's "sent"
    line does, and its --json "received" event carries it (here with no
    local addresses on either side: through the server's proxy)."""
    alice, bob = friends
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(200_000))
    said: list[str] = []
    for as_json in (False, True):
        inbox = tmp_path / f"inbox-{as_json}"
        flags = ["--json"] if as_json else []
        receiver = bob.start(
            "receive", "--yes", "--once", "--dir", str(inbox),
            "--no-local-addresses", *flags,
        )  # fmt: skip
        try:
            if as_json:
                wait_ready(receiver)
            else:  # its first line for people: it is listening
                assert receiver.stderr is not None
                assert receiver.stderr.readline().startswith("waiting for files")
            sent = alice.run(
                "send", str(src), "--to", bob.jid, "--no-local-addresses", *flags
            )
        finally:
            out, err = finish(receiver)
        assert sent.returncode == 0, sent.stderr
        assert receiver.returncode == 0, err
        if as_json:
            (done,) = [e for e in events(sent.stdout) if e["event"] == "sent"]
            (got,) = [e for e in events(out) if e["event"] == "received"]
            assert (got["transport"], got["via"]) == (done["transport"], done["via"])
            assert got["transport"] == "socks5-proxy"
        else:
            said += [x for x in sent.stderr.splitlines() if x.startswith("sent ")]
            said += [x for x in err.splitlines() if x.startswith("saved ")]
    assert len(said) == 2, said
    assert all("through the proxy proxy.xfer.test, " in line for line in said), said
