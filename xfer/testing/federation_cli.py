"""``python -m xfer.testing.federation``: the two-domain topology of
:mod:`xfer.testing.federation`, by hand (as root), to try the command line
as a user would across two servers.

It starts the topology with the accounts given (``user:password@a`` or
``@b``; default alice on a.test and bob on b.test), prints the command that
runs ``xfer`` as each account in its client namespace, then reads commands
on standard input until it ends (or Ctrl-C), and tears everything down:

- ``block direct proxies s2s`` (any of these words): drop that traffic;
- ``open``: lift every block;
- ``restart a`` (or ``b``): that server down for 3 s, then back.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from xfer.testing.federation import DOMAINS, Federation

__all__ = ["main"]

_DEFAULT = ["alice:alice-password@a", "bob:bob-password@b"]
_BLOCKS = ("direct", "proxies", "s2s")


def _accounts(argv: list[str]) -> dict[str, dict[str, str]]:
    accounts: dict[str, dict[str, str]] = {}
    for item in argv or _DEFAULT:
        user_password, _, side = item.rpartition("@")
        user, _, password = user_password.partition(":")
        if side not in DOMAINS or not user or not password:
            raise SystemExit(f"not user:password@a or @b: {item!r}")
        accounts.setdefault(side, {})[user] = password
    return accounts


def _obey(net: Federation, line: str) -> str:
    """Carry out one command line; what to print."""
    words = line.split()
    if not words:
        return ""
    if words == ["open"]:
        net.block()
        return "nothing blocked"
    if words[0] == "block" and set(words[1:]) <= set(_BLOCKS) and words[1:]:
        net.block(**{w: True for w in words[1:]})
        return "blocked: " + " ".join(words[1:])
    if len(words) == 2 and words[0] == "restart" and words[1] in net.running:
        down, back = net.outage(words[1], 3.0)
        return f"{DOMAINS[words[1]]} was down {back - down:.1f} s"
    return "commands: block direct|proxies|s2s..., open, restart a|b"


def main(argv: list[str]) -> int:
    accounts = _accounts(argv)
    # Each account's own key and trusted fingerprints (removed at the end).
    homes = Path(tempfile.mkdtemp(prefix="xfer-federation-homes-"))
    try:
        with Federation(accounts=accounts) as net:
            _explain(net, accounts, homes)
            _serve(net)
    finally:
        shutil.rmtree(homes, ignore_errors=True)
    return 0


def _explain(net: Federation, accounts: dict[str, dict[str, str]], homes: Path) -> None:
    assert net.ca_file is not None
    for side, users in accounts.items():
        for user, password in users.items():
            jid = f"{user}@{DOMAINS[side]}"
            run = net.command(f"c{side}", [sys.executable, "-m", "xfer_cli"])
            print(
                f"as {jid}:\n  XFER_JID={jid} XFER_PASSWORD={shlex.quote(password)} "
                f"XFER_DATA_DIR={shlex.quote(str(homes / jid))} "
                f"XFER_CA_FILE={shlex.quote(str(net.ca_file))} {shlex.join(run)} "
                "<command>"
            )


def _serve(net: Federation) -> None:
    print("commands: block direct|proxies|s2s..., open, restart a|b", flush=True)
    try:
        for line in sys.stdin:
            said = _obey(net, line)
            if said:
                print(said, flush=True)
    except KeyboardInterrupt:
        pass
