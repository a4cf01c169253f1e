"""OTR costs: AKE, data-message round trip and SMP, beside libotr in the same run.

    python benchmarks/otr.py [--repeats 20] [--json PATH]

Both sides run in this one process and messages are handed over in memory,
so the figures are CPU time of the protocol alone (no network). Each case is
timed for xfer <-> xfer, for xfer <-> libotr, and for libotr <-> libotr (the
reference implementation in C via ctypes) when libotr is installed. Medians
of ``--repeats`` runs; prints a table and writes JSON (default
``benchmarks/results/otr.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import add_json_option, write_report

from tests.interop.libotr import LibOTRPeer, find_libotr
from xfer.otr import PrivateKey, Session


class XferSide:
    def __init__(self, key: PrivateKey, tag: int) -> None:
        self.s = Session(key, our_tag=tag)

    def take(self) -> list[str]:
        return self.s.data_to_send()

    def give(self, text: str) -> None:
        self.s.receive(text)


class LibSide:
    def __init__(
        self, folder: Path, name: str, key: PrivateKey, tag: int, peer: str
    ) -> None:
        self.p = LibOTRPeer(folder, account=name, key=key, instag=tag)
        self.peer = peer

    def take(self) -> list[str]:
        return self.p.take()

    def give(self, text: str) -> None:
        self.p.receive(self.peer, text)


Side = XferSide | LibSide


def pump(a: Side, b: Side) -> None:
    for _ in range(30):
        moved = False
        for m in a.take():
            b.give(m)
            moved = True
        for m in b.take():
            a.give(m)
            moved = True
        if not moved:
            return


def start(a: Side, b: Side) -> None:
    if isinstance(a, XferSide):
        a.s.start_ake()
    else:
        a.p.query(a.peer)


def send(side: Side, text: str) -> None:
    if isinstance(side, XferSide):
        side.s.send(text)
    else:
        side.p.send(side.peer, text)


def smp(a: Side, b: Side) -> None:
    if isinstance(a, XferSide):
        a.s.smp_start(b"benchmark secret")
    else:
        a.p.smp_start(b"benchmark secret")
    pump(a, b)
    if isinstance(b, XferSide):
        b.s.smp_answer(b"benchmark secret")
    else:
        b.p.smp_respond(b"benchmark secret")
    pump(a, b)


def measure(make: Callable[[], tuple[Side, Side]], repeats: int) -> dict[str, float]:
    ake, rtt, smp_t = [], [], []
    for _ in range(repeats):
        a, b = make()
        t = time.perf_counter()
        start(a, b)
        pump(a, b)
        ake.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(10):
            send(a, f"message {i} " + "x" * 200)
            pump(a, b)
            send(b, f"reply {i}")
            pump(a, b)
        rtt.append((time.perf_counter() - t) / 10)
        t = time.perf_counter()
        smp(a, b)
        smp_t.append(time.perf_counter() - t)
    return {
        "ake_ms": statistics.median(ake) * 1e3,
        "round_trip_ms": statistics.median(rtt) * 1e3,
        "smp_ms": statistics.median(smp_t) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    add_json_option(parser, "otr")
    args = parser.parse_args()
    k1, k2 = PrivateKey.generate(), PrivateKey.generate()
    rows: dict[str, dict[str, float]] = {}
    rows["xfer <-> xfer"] = measure(
        lambda: (XferSide(k1, 0x100), XferSide(k2, 0x200)), args.repeats
    )
    if find_libotr():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            counter = iter(range(10**6))

            def lib(name: str, key: PrivateKey, tag: int, peer: str) -> LibSide:
                sub = folder / str(next(counter))
                sub.mkdir()
                return LibSide(sub, name, key, tag, peer)

            rows["xfer -> libotr"] = measure(
                lambda: (XferSide(k1, 0x100), lib("b@x", k2, 0x200, "a@x")),
                args.repeats,
            )
            rows["libotr -> xfer"] = measure(
                lambda: (lib("b@x", k2, 0x200, "a@x"), XferSide(k1, 0x100)),
                args.repeats,
            )
            rows["libotr <-> libotr"] = measure(
                lambda: (lib("a@x", k1, 0x100, "b@x"), lib("b@x", k2, 0x200, "a@x")),
                args.repeats,
            )
    else:
        print("libotr not installed: only xfer <-> xfer (apt-get install libotr5)")

    print(
        f"\nmedians of {args.repeats} runs, both sides in one process (CPU cost only)"
    )
    print(
        f"{'pair (initiator first)':24} {'AKE ms':>8} {'msg round trip ms':>18} {'SMP ms':>8}"
    )
    for name, r in rows.items():
        print(
            f"{name:24} {r['ake_ms']:>8.1f} {r['round_trip_ms']:>18.2f} {r['smp_ms']:>8.1f}"
        )
    ref = rows.get("libotr <-> libotr")
    ratios = {}
    if ref:
        ours = rows["xfer <-> xfer"]
        ratios = {k: round(ours[k] / ref[k], 2) for k in ours}
        print(
            f"xfer/libotr time ratio: AKE {ratios['ake_ms']}, round trip "
            f"{ratios['round_trip_ms']}, SMP {ratios['smp_ms']}"
        )
    report = {
        "repeats": args.repeats,
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in rows.items()},
        "xfer_vs_libotr_time_ratio": ratios,
    }
    write_report(args.json, "otr", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
