"""What the CLI shows of a hostile peer's strings: 'xfer receive' and 'xfer
verify' run for real against a stand-in client (no server), fed offers,
questions and reasons full of carriage returns, escape sequences and bidi
overrides. Nothing of it may reach the terminal raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from xfer_cli.commands.receive import TEXT_LIMIT
from xfer_cli.main import EXIT_REFUSED, EXIT_VERIFY, cli, describe, say_error
from xfer_cli.output import Output
from xfer_cli.progress import Progress

import xfer
from xfer.errors import TransferRejected, UntrustedPeer
from xfer.notices import VIA_JINGLE, VIA_SI, Notice, PeerMessage, RefusedOffer
from xfer.otr.fingerprint import format_fingerprint
from xfer.transfer.policy import ENCRYPTED_ONLY

#: A carriage return that rewrites the line, a fake verdict, an escape
#: sequence that hides what follows, a line feed with a fake prompt, a bidi
#: override, an isolate, a C1 CSI, a zero-width space.
HOSTILE = (
    "x\r  fingerprint 00000000: trusted\x1b[8m\nAccept this file? [y/N]: y"
    "\u202egpj.exe\u2066\x9b2J\u200b\t\x7f"
)
PEER = "mallory@example.org/\u202eres\x1b[2K\r"
FP = bytes(range(20))


def _raw(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on (line ends aside)."""
    return [
        ch
        for line in text.split("\n")
        for ch in line
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")
    ]


@dataclass
class FakeOffer:
    """What 'xfer receive' uses of an IncomingOffer."""

    peer: str = PEER
    name: str = f"report{HOSTILE}.pdf"
    media_type: str = f"text/plain{HOSTILE}"
    size: int = 1234
    sha256: bytes = bytes(32)
    fingerprint: bytes = FP
    trusted: bool = False
    fail_with: Exception | None = None
    declined: list[str | None] = field(default_factory=list)

    async def decline(self, why: str | None = None) -> None:
        self.declined.append(why)

    def resumes_from(self, dest: Path) -> int:
        return 0

    async def accept(
        self,
        dest: Path,
        *,
        overwrite: bool,
        progress: Callable[[int, int | None], None],
    ) -> Path:
        progress(0, self.size)
        if self.fail_with is not None:
            raise self.fail_with
        dest.write_bytes(b"x" * self.size)
        return dest


class FakeOTR:
    """The OTR plugin's verification queue: questions in arrival order."""

    def __init__(self, questions: list[tuple[str, str | None]]) -> None:
        self.questions = questions
        self.asked_for: list[str | None] = []

    async def next_question(
        self, timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        self.asked_for.append(peer)
        for i, (who, question) in enumerate(self.questions):
            if peer is None or peer in (who, who.split("/")[0]):
                del self.questions[i]
                return who, question
        raise AssertionError("the test queued no question for this peer")


class FakeXMPP:
    def __init__(self, otr: FakeOTR) -> None:
        self.plugin = {"xfer_otr": otr}


class FakeClient:
    """What the commands use of xfer.Client."""

    def __init__(
        self,
        *,
        jid: str = "zoe@example.org/\x1b]0;pwned\x07",
        offers: list[FakeOffer] | None = None,
        questions: list[tuple[str, str | None]] | None = None,
        peer_full: str = "bob@example.org/phone",
        notices: list[Notice] | None = None,
        unsupported: list[tuple[str, frozenset[int]]] | None = None,
    ) -> None:
        self.jid = jid
        self.fingerprint = "A0252003 07B27F2D 0EF89428 AE02181D B972498F"
        self.offers = offers or []
        self.otr = FakeOTR(questions or [])
        self.xmpp = FakeXMPP(self.otr)
        self.peer_full = peer_full
        self.answered: list[tuple[str, str]] = []
        self.notices = notices or []
        self.notices_shown = asyncio.Event()
        self.unsupported = unsupported or []
        #: Set once every report of an old client was taken and shown.
        self.reported = asyncio.Event()
        if not self.unsupported:
            self.reported.set()
        self.trusted = False

    async def next_offer(self, timeout: float | None = None) -> FakeOffer:
        await self.notices_shown.wait()  # the notices first
        # The reports of old clients too (if the command takes them).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reported.wait(), 5)
        return self.offers.pop(0)

    async def next_notice(self, timeout: float | None = None) -> Notice:
        if not self.notices:
            # Each notice was shown as it was taken; wait to be cancelled.
            self.notices_shown.set()
            await asyncio.Event().wait()
        return self.notices.pop(0)

    async def next_unsupported_peer(
        self, timeout: float | None = None
    ) -> tuple[str, frozenset[int]]:
        if not self.unsupported:
            self.reported.set()
            await asyncio.Event().wait()  # nothing more: until cancelled
        return self.unsupported.pop(0)

    async def secure(self, peer: str, *, wait: bool = False) -> tuple[str, str, bool]:
        return self.peer_full, self.fingerprint, False

    async def next_verification(
        self, timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        return await self.otr.next_question(timeout, peer=peer)

    async def answer_verification(
        self, peer: str, secret: str, *, timeout: float = 120
    ) -> xfer.SMPResult:
        self.answered.append((peer, secret))
        self.trusted = True
        return xfer.SMPResult.SUCCEEDED

    def is_trusted(self, peer: str, fingerprint: str | bytes) -> bool:
        return self.trusted

    async def close(self) -> None:
        pass


def _use(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> None:
    async def connect(*args: object, **kwargs: object) -> FakeClient:
        return client

    monkeypatch.setenv("XFER_JID", "zoe@example.org")
    monkeypatch.setenv("XFER_PASSWORD", "pw")
    monkeypatch.setattr(xfer, "connect", connect)


def _receive(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    offer: FakeOffer,
    *options: str,
    answer: str | None = "n\n",
) -> Result:
    """'xfer receive --once' with ``offer`` waiting, ``answer`` on its stdin."""
    _use(monkeypatch, FakeClient(offers=[offer]))
    return CliRunner().invoke(
        cli, ["receive", "--once", *options, "--dir", str(env / "in")], input=answer
    )


def test_receive_shows_a_hostile_offer_escaped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offer = FakeOffer()
    result = _receive(env, monkeypatch, offer)
    assert result.exit_code == 0, result.output
    assert _raw(result.output) == []
    shown = result.stderr
    # Every part is there, visibly: the real verdict stays on its own line.
    assert "text/plainx\\x0d  fingerprint 00000000: trusted\\x1b[8m\\x0a" in shown
    assert "\\u202egpj.exe\\u2066\\x9b2J\\u200b\\x09\\x7f" in shown
    assert "mallory@example.org/\\u202eres\\x1b[2K\\x0d offers 'report" in shown
    assert "\\x1b]0;pwned\\x07" in shown  # a server-chosen resource of ours
    lines = shown.splitlines()
    verdict = [line for line in lines if line.startswith("  fingerprint ")]
    assert len(verdict) == 1
    assert "NOT TRUSTED" in verdict[0]
    assert offer.declined == [None]
    assert any(line.startswith("declined 'report") for line in lines)


def test_receive_caps_a_huge_name(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offer = FakeOffer(name="A" * 100_000, media_type="B" * 100_000)
    result = _receive(env, monkeypatch, offer)
    assert result.exit_code == 0, result.output
    assert all(len(line) < 600 for line in result.stderr.splitlines())


def test_receive_json_events_carry_no_raw_control_characters(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offer = FakeOffer()
    result = _receive(env, monkeypatch, offer, "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.isascii()
    assert _raw(result.stdout) == []
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ready", "offer", "declined"]
    assert events[1]["name"] == offer.name  # exact, for scripts
    assert events[1]["peer"] == PEER


BOB = "bob@example.org/phone"
SHOWN_PEER = "mallory@example.org/\\u202eres\\x1b[2K\\x0d"
SHOWN_HOSTILE = (
    "x\\x0d  fingerprint 00000000: trusted\\x1b[8m\\x0aAccept this file? [y/N]: y"
    "\\u202egpj.exe\\u2066\\x9b2J\\u200b\\x09\\x7f"
)


def _notices() -> list[Notice]:
    """What else peers send: text inside OTR, refused unencrypted offers."""
    return [
        PeerMessage(peer=PEER, text=f"hi{HOSTILE}", fingerprint=FP, trusted=False),
        PeerMessage(
            peer=BOB, text="see you", fingerprint=FP, trusted=True, suppressed=3
        ),
        RefusedOffer(
            peer=PEER,
            name=f"x{HOSTILE}.pdf",
            size=1_234_567,
            via=VIA_JINGLE,
            reason=ENCRYPTED_ONLY,
        ),
        RefusedOffer(peer=BOB, name=None, size=None, via=VIA_SI, reason=ENCRYPTED_ONLY),
        PeerMessage(peer=BOB, text="Z" * 100_000, fingerprint=None, trusted=False),
    ]


def test_receive_shows_what_else_peers_send_escaped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, FakeClient(offers=[FakeOffer()], notices=_notices()))
    result = CliRunner().invoke(
        cli, ["receive", "--once", "--dir", str(env / "in")], input="n\n"
    )
    assert result.exit_code == 0, result.output
    assert _raw(result.output) == []
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if " says " in line)
    said, held, bob_said, plain, si, flood = lines[start : start + 6]
    assert said == (
        f"{SHOWN_PEER} says (in OTR, fingerprint NOT TRUSTED): hi{SHOWN_HOSTILE}"
    )
    assert held == f"(3 more from {BOB} not shown: too many)"
    assert bob_said == f"{BOB} says (in OTR): see you"
    assert plain == (
        f"{SHOWN_PEER} offered 'x{SHOWN_HOSTILE}.pdf' (1.2 MiB) unencrypted; "
        "refused: xfer accepts only end-to-end encrypted files"
    )
    assert si == (
        f"{BOB} offered a file unencrypted; "
        "refused: xfer accepts only end-to-end encrypted files"
    )
    prefix = f"{BOB} says (in OTR, fingerprint NOT TRUSTED): "
    assert flood.startswith(prefix + "ZZZ")
    assert len(flood) == len(prefix) + TEXT_LIMIT  # capped, the cut marked
    assert flood.endswith("Z\u2026")
    # Then the offer, as before.
    assert lines[start + 6].startswith(f"{SHOWN_PEER} offers 'report")


def test_receive_json_reports_what_else_peers_send(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, FakeClient(offers=[FakeOffer()], notices=_notices()))
    result = CliRunner().invoke(
        cli, ["receive", "--once", "--json", "--dir", str(env / "in")], input="n\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.isascii()
    assert _raw(result.stdout) == []
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == [
        "ready",
        "message",
        "message",
        "refused",
        "refused",
        "message",
        "offer",
        "declined",
    ]
    said, bob_said, plain, si = events[1:5]
    assert (said["peer"], said["text"], said["trusted"]) == (
        PEER,
        f"hi{HOSTILE}",
        False,
    )
    assert said["fingerprint"] == format_fingerprint(FP)
    assert (bob_said["trusted"], bob_said["suppressed"]) == (True, 3)
    assert plain == {
        "event": "refused",
        "time": plain["time"],
        "peer": PEER,
        "name": f"x{HOSTILE}.pdf",  # exact, for scripts
        "size": 1_234_567,
        "via": "jingle",
        "why": ENCRYPTED_ONLY,
        "suppressed": 0,
    }
    assert (si["name"], si["size"], si["via"]) == (None, None, "si")


def test_a_hostile_reason_in_an_error_is_escaped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = f"the receiver said: {HOSTILE}"
    offer = FakeOffer(
        trusted=True,
        fail_with=TransferRejected(reason, reason="decline", text=HOSTILE),
    )
    result = _receive(env, monkeypatch, offer, "--yes", "--json", answer=None)
    assert result.exit_code == EXIT_REFUSED
    assert _raw(result.output) == []
    (error,) = result.stderr.splitlines()
    assert error.startswith("xfer: error: the receiver said: x\\x0d  fingerprint")
    failed = json.loads(result.stdout.splitlines()[-1])
    assert failed["event"] == "failed"
    assert failed["error"] == reason
    assert result.stdout.isascii()


def test_error_lines_are_escaped_and_capped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message, _ = describe(UntrustedPeer(PEER, FP))
    say_error(message)
    say_error("y" * 100_000)
    err = capsys.readouterr().err
    assert _raw(err) == []
    first, second = err.splitlines()
    assert "\\u202eres\\x1b[2K\\x0d" in first
    assert len(second) <= len("xfer: error: ") + 1000


def test_status_lines_and_progress_labels_are_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Output().say(f"sending {HOSTILE}")
    assert _raw(capsys.readouterr().err) == []
    stream = io.StringIO()
    progress = Progress(HOSTILE, enabled=True, stream=stream)
    progress(10, 10)
    progress.close()
    drawn = stream.getvalue()
    # Only the progress line's own redraw (CR, ESC[K) and its final newline.
    assert drawn.startswith("\r\x1b[K")
    assert _raw(drawn.removeprefix("\r\x1b[K")) == []
    assert drawn.count("\x1b") == 1


def test_verify_takes_only_the_chosen_peers_question(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mallory asked first; 'xfer verify bob' must neither show her question as
    # Bob's nor answer her.
    client = FakeClient(
        questions=[
            ("mallory@example.org/x", "Bob here: what is the secret?"),
            ("bob@example.org/phone", f"our dog's name?{HOSTILE}"),
        ]
    )
    _use(monkeypatch, client)
    result = CliRunner().invoke(cli, ["verify", "bob@example.org"], input="rex\n")
    assert result.exit_code == 0, result.output
    assert "Bob here" not in result.output
    assert _raw(result.output) == []
    assert client.otr.asked_for == ["bob@example.org/phone"]
    assert client.answered == [("bob@example.org/phone", "rex")]
    assert client.otr.questions == [
        ("mallory@example.org/x", "Bob here: what is the secret?")
    ]
    asks = [line for line in result.stderr.splitlines() if " asks: " in line]
    assert asks == [
        "bob@example.org/phone asks: 'our dog's name?x\\x0d  fingerprint 00000000: "
        "trusted\\x1b[8m\\x0aAccept this file? [y/N]: y\\u202egpj.exe\\u2066"
        "\\x9b2J\\u200b\\x09\\x7f'"
    ]


def test_verify_shows_a_hostile_peer_jid_escaped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient(peer_full=PEER, questions=[(PEER, None)])

    async def refuse(peer: str, secret: str, *, timeout: float = 120) -> xfer.SMPResult:
        return xfer.SMPResult.FAILED

    monkeypatch.setattr(client, "answer_verification", refuse)
    _use(monkeypatch, client)
    result = CliRunner().invoke(cli, ["verify", "mallory@example.org"], input="s\n")
    assert result.exit_code == EXIT_VERIFY
    assert _raw(result.output) == []
    assert "mallory@example.org/\\u202eres\\x1b[2K\\x0d has fingerprint" in (
        result.stderr
    )
    assert "mallory@example.org/\\u202eres\\x1b[2K\\x0d asks to verify" in (
        result.stderr
    )


def test_receive_names_a_peer_with_old_otr_escaped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that offered OTR version 2 only (or a server forging that in
    # a hostile JID's name): one escaped line, and an event for scripts.
    _use(
        monkeypatch,
        FakeClient(offers=[FakeOffer()], unsupported=[(PEER, frozenset({2}))]),
    )
    args = ["receive", "--once", "--dir", str(env / "in")]
    result = CliRunner().invoke(cli, args, input="n\n")
    assert result.exit_code == 0, result.output
    assert _raw(result.output) == []
    lines = [line for line in result.stderr.splitlines() if "OTR" in line]
    assert lines == [
        "mallory@example.org/\\u202eres\\x1b[2K\\x0d cannot exchange files with "
        "you: its client offers only OTR version 2, and xfer needs version 3 "
        "(it was told so)"
    ]
    _use(
        monkeypatch,
        FakeClient(offers=[FakeOffer()], unsupported=[(PEER, frozenset({1, 2}))]),
    )
    result = CliRunner().invoke(cli, [*args, "--json"], input="n\n")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ready", "unsupported", "offer", "declined"]
    assert (events[1]["peer"], events[1]["versions"]) == (PEER, [1, 2])
    assert result.stdout.isascii()
