"""'xfer verify' says how the verification ended, as the store has it, with
its own exit code for each ending: run for real against a stand-in client
(no server; the real exchange is in tests/integration/test_verify.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from xfer_cli.main import (
    EXIT_ABORTED,
    EXIT_CODES_HELP,
    EXIT_TIMEOUT,
    EXIT_VERIFY,
    cli,
    describe,
)

import xfer
from tests.cli.test_hostile_display import FakeClient, _use
from xfer.errors import VerificationTimeout

BOB = "bob@example.org/phone"


class Outcome(FakeClient):
    """Bob asks; our answer ends in ``result``, the store then says ``after``."""

    def __init__(self, result: xfer.SMPResult, *, before: bool, after: bool) -> None:
        super().__init__(questions=[(BOB, "our dog?")], peer_full=BOB)
        self.result, self.before, self.trusted = result, before, before
        self.after = after
        self.timeouts: list[float] = []

    async def secure(self, peer: str, *, wait: bool = False) -> tuple[str, str, bool]:
        return BOB, self.fingerprint, self.before

    async def answer_verification(
        self, peer: str, secret: str, *, timeout: float = 120
    ) -> xfer.SMPResult:
        self.timeouts.append(timeout)
        self.trusted = self.after
        return self.result


def _verify(
    monkeypatch: pytest.MonkeyPatch, client: FakeClient, *options: str
) -> tuple[int, str]:
    _use(monkeypatch, client)
    result = CliRunner().invoke(
        cli, ["verify", "bob@example.org", *options], input="rex\n"
    )
    return result.exit_code, result.stderr


def test_a_failure_says_the_trust_it_had_is_gone(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Outcome(xfer.SMPResult.FAILED, before=True, after=False)
    code, err = _verify(monkeypatch, client)
    assert code == EXIT_VERIFY
    assert "FAILED: the secrets differ" in err
    assert f"its fingerprint {client.fingerprint} is no longer trusted" in err


def test_an_abort_is_no_failure_and_keeps_trust(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Outcome(xfer.SMPResult.ABORTED, before=True, after=True)
    code, err = _verify(monkeypatch, client)
    assert code == EXIT_ABORTED
    assert f"the verification of {BOB} was aborted before the end" in err
    assert f"its fingerprint {client.fingerprint} is still trusted" in err
    assert "FAILED" not in err
    assert "secrets differ" not in err


def test_the_timeout_reaches_both_waits(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Outcome(xfer.SMPResult.SUCCEEDED, before=False, after=True)
    asked_within: list[float | None] = []
    real = client.next_verification

    async def next_verification(
        timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        asked_within.append(timeout)
        return await real(timeout, peer=peer)

    monkeypatch.setattr(client, "next_verification", next_verification)
    code, err = _verify(monkeypatch, client, "--timeout", "7")
    assert code == 0, err
    assert (asked_within, client.timeouts) == ([7.0], [7.0])
    assert f"verified: {BOB} is trusted" in err


def test_a_timeout_has_its_own_message_and_exit_code(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Outcome(xfer.SMPResult.SUCCEEDED, before=False, after=False)

    async def no_answer(
        peer: str, secret: str, *, timeout: float = 120
    ) -> xfer.SMPResult:
        msg = f"no answer from {peer} within {timeout:g} s"
        raise VerificationTimeout(msg, peer=peer, timeout=timeout)

    monkeypatch.setattr(client, "answer_verification", no_answer)
    code, err = _verify(monkeypatch, client, "--timeout", "5")
    assert code == EXIT_TIMEOUT
    assert f"no answer from {BOB} within 5 s" in err
    assert "broke off" not in err


def test_describe_and_the_help_know_the_new_codes() -> None:
    timeout = VerificationTimeout(
        "no answer from x@y/z within 3 s", peer="x@y/z", timeout=3
    )
    message, code = describe(timeout)
    assert code == EXIT_TIMEOUT
    assert message.startswith("no answer from x@y/z within 3 s")
    assert f"  {EXIT_ABORTED}   the verification was aborted" in EXIT_CODES_HELP
    assert f"  {EXIT_TIMEOUT}   no answer from the peer" in EXIT_CODES_HELP
    assert len({EXIT_ABORTED, EXIT_TIMEOUT, EXIT_VERIFY}) == 3
