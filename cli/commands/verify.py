"""``xfer verify``: check a peer's fingerprint with a secret you both know (SMP)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from xfer_cli.account import account_options, connect, run
from xfer_cli.main import EXIT_ABORTED, EXIT_USAGE, EXIT_VERIFY, CommandError
from xfer_cli.output import quoted

from xfer.display import shown
from xfer.otr.trust import SMPResult

if TYPE_CHECKING:
    import xfer

__all__ = ["verify"]


def _read_secret(prompt: str) -> str:
    """The SMP secret: asked without echo on a terminal, else one stdin line."""
    if sys.stdin.isatty():
        secret = str(click.prompt(prompt, hide_input=True, err=True))
    else:
        secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        raise CommandError("an empty secret proves nothing", exit_code=EXIT_USAGE)
    return secret


@click.command()
@click.argument("peer", metavar="JID")
@click.option("--question", "-Q", help="A question whose answer is the secret.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120,
    show_default=True,
    help="Seconds to wait for the other side: for its question, or its answer.",
)
@account_options
def verify(
    peer: str,
    question: str | None,
    timeout: float,
    jid: str | None,
    host: str | None,
    port: int | None,
    tls: str | None,
) -> None:
    """Check JID's fingerprint with a secret you both know (SMP).

    Both of you run 'xfer verify' at the same time, each naming the other,
    and type the same secret (agreed in person, or the answer to --question).
    The secret never crosses the network; if it matches on both sides, each
    fingerprint is trusted. A wrong secret, or someone in the middle, fails
    (exit code 7), and the fingerprint is then not trusted, even if it was
    before. A verification either side gave up (exit code 11) or that got no
    answer within --timeout (exit code 12) leaves trust as it was. The secret
    is asked for, never given as an argument.
    """

    async def job() -> int:
        client = await connect(jid, host, port, tls, accept_untrusted=True)
        try:
            full, fingerprint, trusted = await client.secure(peer, wait=True)
            click.echo(
                f"{shown(full)} has fingerprint {fingerprint}"
                + (" (already trusted)" if trusted else ""),
                err=True,
            )
            # Who asks: the side with the smaller full JID (both must agree).
            if client.jid < full:
                secret = _read_secret(
                    f"secret{' (answer to: ' + question + ')' if question else ''}"
                )
                click.echo(f"waiting for {shown(full)} to answer...", err=True)
                result = await client.verify(
                    full, secret, question=question, timeout=timeout
                )
            else:
                click.echo(f"waiting for {shown(full)} to ask...", err=True)
                # Only this peer's question: another's (anyone can start one)
                # stays queued, and is never shown as if it came from them.
                who, asked = await _next_question(client, full, timeout)
                click.echo(
                    f"{shown(who)} asks: {quoted(asked)}"
                    if asked
                    else f"{shown(who)} asks to verify (no question)",
                    err=True,
                )
                secret = _read_secret("secret")
                result = await client.answer_verification(who, secret, timeout=timeout)
            # What is said below is what is stored now.
            trusted_now = client.is_trusted(full, fingerprint)
        finally:
            await client.close()
        return _report(
            result, shown(full), fingerprint, before=trusted, now=trusted_now
        )

    run(job())


def _report(
    result: SMPResult, peer: str, fingerprint: str, *, before: bool, now: bool
) -> int:
    """Say how the verification of ``peer`` ended and whether its
    fingerprint is trusted ``now`` (as stored); it was ``before``."""
    if now:
        state = f"its fingerprint {fingerprint} is {'still ' if before else ''}trusted"
    else:
        state = (
            f"its fingerprint {fingerprint} is "
            f"{'no longer' if before else 'not'} trusted"
        )
    if result is SMPResult.ABORTED:
        raise CommandError(
            f"the verification of {peer} was aborted before the end ({peer} "
            f"gave it up, or a message came out of order): nothing was learnt, "
            f"and {state}",
            exit_code=EXIT_ABORTED,
        )
    if result is SMPResult.FAILED:
        raise CommandError(
            f"verification of {peer} FAILED: the secrets differ, or someone "
            f"is in the middle; {state}",
            exit_code=EXIT_VERIFY,
        )
    if not now:  # pragma: no cover (a success is stored before this)
        raise CommandError(
            f"the verification of {peer} succeeded, but {state}",
            exit_code=EXIT_VERIFY,
        )
    click.echo(f"verified: {peer} is trusted with fingerprint {fingerprint}", err=True)
    return 0


async def _next_question(
    client: xfer.Client, peer: str, timeout: float
) -> tuple[str, str | None]:
    """The next verification ``peer`` (a full JID) started: (its full JID,
    its question). Questions from anyone else stay queued."""
    return await client.next_verification(timeout, peer=peer)
