"""The deploy tests' measured runs, and the table they make
(``benchmarks/results/deploy.md``, written when ``XFER_DEPLOY_TABLE`` names
it: ``tests/deploy/conftest.py`` calls :func:`write` at the session's end).

Each test module records its runs under a section; a section not run this
time keeps its rows from the file, so one module can be measured alone.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SECTIONS", "Run", "record", "write"]


@dataclass
class Run:
    scenario: str
    transport: str
    via: str
    size: int
    seconds: float
    setup_seconds: float
    after_failure: float | None

    @property
    def rate(self) -> float:
        return self.size / max(self.seconds, 1e-9) / 1e6

    def row(self) -> str:
        after = "-" if self.after_failure is None else f"{self.after_failure:.2f}"
        # Small files in KiB; slow rates (a shaper, a throttled server) keep
        # their figures: two places under 1 MB/s, four under 0.1.
        size = (
            f"{self.size >> 20} MiB"
            if self.size >= 1 << 20
            else f"{self.size >> 10} KiB"
        )
        rate = (
            f"{self.rate:.1f}"
            if self.rate >= 1
            else f"{self.rate:.2f}"
            if self.rate >= 0.1
            else f"{self.rate:.4f}"
        )
        return (
            f"| {self.scenario} | {self.transport} | {self.via or '-'} | "
            f"{size} | {rate} | {self.setup_seconds:.2f} | {after} |"
        )


#: Section key -> (heading, description), in the file's order.
SECTIONS = {
    "lan": (
        "Two hosts, one server",
        "`tests/deploy/test_candidates.py`: two clients in two namespaces, "
        "Prosody and its proxy65 in a third that routes between them (TLS off).",
    ),
    "federation": (
        "Two federated domains, TLS on c2s and s2s",
        "`tests/deploy/test_federation.py`: alice@a.test and bob@b.test, each "
        "client and each Prosody in its own namespace, a router between them "
        "with a local DNS (SRV and A records), certificates from a throw-away "
        "CA (s2s_secure_auth), clients found their server by SRV and trusted "
        "the CA with --ca-file.",
    ),
    "ejabberd": (
        "Prosody and ejabberd federated, TLS on c2s and s2s",
        "`tests/deploy/test_ejabberd_federation.py`: the same topology with "
        "b.test served by ejabberd as Debian ships it (its c2s shaper, 3000 B/s "
        "after a 20 kB burst; its proxy65) and no dialback: the servers "
        "authenticate each other by certificate only. One server's proxy "
        "dropped shows the other's carrying the data.",
    ),
    "outages": (
        "Outages and stock server settings across the two domains",
        "`tests/deploy/test_outages_deploy.py`: the same topology, both Prosody "
        "servers with offline storage on (as stock servers run), direct paths "
        "and both proxies dropped (the data crosses both servers, IBB). The "
        "restart rows name the resume time: from the restarted server "
        "listening again to more of the file on the receiver's disk (an upper "
        "bound: verified data is written in batches). MB/s here counts the "
        "whole send, the outage included.",
    ),
}

_INTRO = """\
# Transfers across hosts and domains (network namespaces)

Written by the deploy tests (`XFER_DEPLOY_TABLE=benchmarks/results/deploy.md
bash scripts/test -m deploy`). Blocked paths drop packets silently
(nftables). Time to first byte: from the sender receiving session-accept to
the stream being ready; after failure: from the last of the peer's
candidates failing to the stream being ready. MB/s: the file's size over
the sender's whole send (offer to the receiver's verdict), on a shared
machine: noisy. Issue 19 reported, from a similar topology set up by hand,
10.6 s before the proxy, 12-22 s before IBB, and no direct path.
"""

_HEADER = (
    "| scenario | transport | via | size | MB/s | first byte (s) "
    "| after failure (s) |\n|---|---|---|---|---|---|---|"
)

RUNS: dict[str, list[Run]] = {}


def record(section: str, run: Run) -> None:
    RUNS.setdefault(section, []).append(run)


def _old_rows(text: str, heading: str) -> list[str]:
    """The table rows under ``## heading`` in an earlier file."""
    _, found, rest = text.partition(f"## {heading}\n")
    if not found:
        return []
    rest = rest.split("\n## ", 1)[0]
    return [
        line
        for line in rest.splitlines()
        if line.startswith("| ") and not line.startswith("| scenario")
    ]


def write() -> None:
    target = os.environ.get("XFER_DEPLOY_TABLE")
    if not target or not RUNS:
        return
    path = Path(target)
    old = path.read_text() if path.exists() else ""
    parts = [_INTRO.rstrip()]
    for key, (heading, about) in SECTIONS.items():
        rows = [r.row() for r in RUNS.get(key, [])] or _old_rows(old, heading)
        if rows:
            text = textwrap.fill(about, 76)
            parts.append(f"## {heading}\n\n{text}\n\n{_HEADER}\n" + "\n".join(rows))
    path.write_text("\n\n".join(parts).rstrip("\n") + "\n")
