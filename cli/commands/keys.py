"""``xfer keys``, ``xfer trust``, ``xfer untrust``: your OTR fingerprint and the
fingerprints you trust (no network)."""

from __future__ import annotations

import time

import click
from xfer_cli.account import identity
from xfer_cli.main import EXIT_USAGE, CommandError
from xfer_cli.output import Output, json_option

from xfer.display import shown
from xfer.errors import XferError
from xfer.jid import bare_jid
from xfer.otr.fingerprint import format_fingerprint, parse_fingerprint

__all__ = ["keys", "trust", "untrust"]


@click.command()
@json_option
def keys(as_json: bool) -> None:
    """Show your OTR fingerprint (creating your key on first use) and the
    fingerprints you trust.

    Tell your fingerprint to the people you exchange files with over a
    channel you trust (in person, a call), and compare theirs the same way;
    then 'xfer trust' them. Or let 'xfer verify' check both with a shared
    secret.
    """
    store = identity()
    key = store.private_key()
    ours = format_fingerprint(key.public.fingerprint)
    trusted = store.trust_store().entries()
    out = Output(as_json=as_json)
    out.event(
        "keys",
        fingerprint=ours,
        directory=str(store.directory),
        trusted=[
            {
                "jid": jid,
                "fingerprint": format_fingerprint(e.fingerprint),
                "how": e.how.value,
            }
            for jid, e in trusted
        ],
    )
    if as_json:
        return
    click.echo(f"your fingerprint: {ours}")
    click.echo(f"key and trust store: {store.directory}")
    if not trusted:
        click.echo(
            "you trust nobody yet ('xfer trust JID FINGERPRINT' or 'xfer verify JID')"
        )
    for jid, entry in trusted:
        fp = format_fingerprint(entry.fingerprint)
        click.echo(f"trusted: {shown(jid)}  {fp}  ({entry.how.value})")


@click.command()
@click.argument("jid")
@click.argument("fingerprint", nargs=-1, required=True)
def trust(jid: str, fingerprint: tuple[str, ...]) -> None:
    """Trust FINGERPRINT as JID's OTR key.

    Only after comparing it with JID's owner over a channel you trust. The
    fingerprint may be written with or without spaces (40 hex digits).
    """
    if "@" not in jid:
        raise CommandError(f"{jid!r} is not a JID (user@server)", exit_code=EXIT_USAGE)
    try:
        raw = parse_fingerprint("".join(fingerprint))
    except XferError as exc:
        raise CommandError(
            f"{exc}; it looks like 'xfer keys' shows it: 40 hex digits",
            exit_code=EXIT_USAGE,
        ) from None
    from xfer.otr.trust import Verification

    store = identity()
    trust_store = store.trust_store()
    trust_store.trust(jid, raw, Verification.MANUAL, now=int(time.time()))
    store.save_trust_store(trust_store)
    click.echo(f"trusted {bare_jid(jid)}: {format_fingerprint(raw)}", err=True)


@click.command()
@click.argument("jid")
@click.argument("fingerprint", nargs=-1)
def untrust(jid: str, fingerprint: tuple[str, ...]) -> None:
    """Stop trusting JID's fingerprint (or all of them, if none is given)."""
    store = identity()
    trust_store = store.trust_store()
    raw = parse_fingerprint("".join(fingerprint)) if fingerprint else None
    gone = trust_store.untrust(jid, raw)
    store.save_trust_store(trust_store)
    if not gone:
        raise CommandError(f"no trusted fingerprint for {bare_jid(jid)}")
    click.echo(f"no longer trusted: {gone} fingerprint(s) of {bare_jid(jid)}", err=True)
