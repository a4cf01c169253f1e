"""How long one hostile OTR message can hold the event loop, beside one modexp.

    python benchmarks/otr_stall.py [--repeats 20] [--json PATH]

The XMPP adapter runs ``Account.receive`` on the event loop, so the time one
message costs there is time the loop stands still. For each kind of crafted
input (SMP steps with huge or maximal values, AKE messages with oversized or
garbage fields, huge data messages, fragments) this times ``receive`` alone,
the victim's state prepared beforehand, and reports the max and median of
``--repeats`` runs in ms. The reference, measured in the same run, is one
``pow(g, x, p)`` with the 1536-bit OTR modulus and a 1536-bit exponent; the
ratio column reads "this message costs k modexps". The target: under 10 ms.

The SMP cases come from an authenticated peer (SMP runs inside the encrypted
session); "legit" rows are genuine protocol steps, the most any SMP message
can make us compute. ``receive`` runs with the adapter's policy
(``defer_smp``): an SMP TLV only queues its step.

The second table measures the event loop itself: an asyncio loop with a
heartbeat (a 1 ms sleep, its lateness recorded) while one SMP message goes
the adapter's way (``Account.receive`` on the loop, then the adapter's
:class:`~xfer.xmpp.smp.SMPRunner` computes the step and applies it), for the
worker process the adapter uses, a worker thread (its fallback), and inline
on the loop (the old way). "stall" is the heartbeat's worst lateness, in ms
and in modexps; "step" the time from receive to the applied result. The
worker process's start (once, on the first SMP) is reported apart.

Prints the tables and writes JSON (default
``benchmarks/results/otr_stall.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import os
import statistics
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import add_json_option, write_report

from xfer.errors import RemoteProtocolError
from xfer.otr import Account, Policy, PrivateKey, Session
from xfer.otr import events as ev
from xfer.otr.crypto import DH_G, DH_P, DH_Q
from xfer.otr.messages import DataMessage, DHCommit, DHKey, RevealSignature, Signature
from xfer.otr.smp import (
    SMP,
    TLV_SMP1,
    TLV_SMP2,
    TLV_SMP3,
    TLV_SMP4,
    SMPInput,
)
from xfer.testing.otr_inputs import LAYOUTS, filler, smp_payload
from xfer.xmpp.smp import SMPRunner

DEFERRED = Policy(defer_smp=True)
ALICE, BOB, MALLORY = "alice@x/1", "bob@x/1", "mallory@x/1"


def rand_exponent() -> int:
    return int.from_bytes(os.urandom(192), "big")


def huge_payload(kind: int) -> bytes:
    """One challenge as long as a TLV allows, the other values valid."""
    values = filler(kind)
    values[LAYOUTS[kind].index("c")] = (1 << (8 * 65000)) - 1
    return smp_payload(values)


def max_range_payload(kind: int) -> bytes:
    """Every value as large as the checks allow, elements in the subgroup:
    all the order checks run, then the first proof fails."""
    values = []
    for k in LAYOUTS[kind]:
        if k == "g":
            values.append(pow(DH_G, rand_exponent(), DH_P))
        elif k == "c":
            values.append((1 << 256) - 1)
        else:
            values.append(DH_Q - 1)
    return smp_payload(values)


def legit_steps() -> dict[int, tuple[SMP, bytes]]:
    """For each SMP message: a machine waiting for it and the genuine message."""
    a, b = SMP(os.urandom), SMP(os.urandom)
    out: dict[int, tuple[SMP, bytes]] = {}
    one = a.handle(SMPInput.START, (12345, None)).tlvs[0][1]
    out[TLV_SMP1] = (copy.deepcopy(b), one)
    b.handle(SMPInput.RECV_1, (TLV_SMP1, one))
    two = b.handle(SMPInput.SECRET, 12345).tlvs[0][1]
    out[TLV_SMP2] = (copy.deepcopy(a), two)
    three = a.handle(SMPInput.RECV_2, two).tlvs[0][1]
    out[TLV_SMP3] = (copy.deepcopy(b), three)
    four = b.handle(SMPInput.RECV_3, three).tlvs[0][1]
    out[TLV_SMP4] = (copy.deepcopy(a), four)
    return out


def relay(a: Account, b: Account, a_name: str, b_name: str) -> None:
    for _ in range(10):
        moved = False
        for _, text in a.data_to_send():
            moved = True
            b.receive(a_name, text)
        for _, text in b.data_to_send():
            moved = True
            a.receive(b_name, text)
        if not moved:
            return


def timed(victim: Account, peer: str, text: str) -> float:
    start = time.perf_counter()
    with contextlib.suppress(RemoteProtocolError):
        victim.receive(peer, text)
    return (time.perf_counter() - start) * 1000


def mallory_answers(victim: Account, mallory: Session) -> str:
    """Mallory takes what the victim sent and gives her one reply."""
    for _, text in victim.data_to_send():
        mallory.receive(text)
    (reply,) = mallory.data_to_send()
    return reply


def garbage_signature() -> dict[str, Any]:
    """Mallory's tags and a random signature and MAC (AKE fields)."""
    return {
        "sender_tag": 0x6666,
        "receiver_tag": 0x2222,
        "encrypted_signature": os.urandom(2048),
        "mac": os.urandom(20),
    }


def forged_data(sender_tag: int, size: int, **extra: bytes) -> DataMessage:
    """A data message to bob of ``size`` random bytes, keys and MAC forged."""
    return DataMessage(
        sender_tag=sender_tag,
        receiver_tag=0x2222,
        flags=0,
        sender_keyid=1,
        recipient_keyid=1,
        next_dh=DH_P - 2,
        ctr=bytes(8),
        encrypted=os.urandom(size),
        mac=os.urandom(20),
        **extra,
    )


class Bench:
    def __init__(self, keys: list[PrivateKey], repeats: int) -> None:
        self.keys = keys
        self.repeats = repeats
        self.alice = Account(keys[0], our_tag=0x1111)
        self.bob = Account(keys[1], our_tag=0x2222)
        self.bob.session(ALICE).start_ake()
        relay(self.alice, self.bob, ALICE, BOB)
        alice_s, bob_s = self.alice.best(BOB), self.bob.best(ALICE)
        assert alice_s is not None
        assert bob_s is not None
        self.alice_s: Session = alice_s
        self.bob_s: Session = bob_s
        self.steps = legit_steps()

    def runs(self, one: Callable[[], float]) -> list[float]:
        return [one() for _ in range(self.repeats)]

    def data(self, tlvs: list[tuple[int, bytes]], smp: SMP | None) -> float:
        """Alice sends TLVs in a data message; bob's SMP is set to ``smp``."""
        self.alice_s.send("", tlvs)
        (text,) = self.alice_s.data_to_send()
        if smp is not None:
            self.bob_s.smp = copy.deepcopy(smp)
        self.bob_s.policy = DEFERRED  # as the adapter's sessions
        ms = timed(self.bob, ALICE, text)
        self.bob_s.smp_abort()  # (the queued step is not computed here)
        relay(self.alice, self.bob, ALICE, BOB)
        return ms

    async def loop_stall(
        self, kind: int, how: str, runner: SMPRunner | None
    ) -> tuple[float, float]:
        """(worst heartbeat lateness, receive-to-result) in ms for one SMP
        message handled the adapter's way (``runner`` None: inline)."""
        waiting, genuine = self.steps[kind]
        data = genuine if how == "legit" else max_range_payload(kind)
        self.alice_s.send("", [(kind, data)])
        (text,) = self.alice_s.data_to_send()
        self.bob_s.smp = copy.deepcopy(waiting)
        self.bob_s.policy = DEFERRED if runner is not None else Policy()
        loop = asyncio.get_running_loop()
        worst = 0.0
        stop = False

        async def heartbeat() -> None:
            nonlocal worst
            while not stop:
                before = loop.time()
                await asyncio.sleep(0.001)
                worst = max(worst, (loop.time() - before - 0.001) * 1000)

        beat = asyncio.ensure_future(heartbeat())
        await asyncio.sleep(0.02)
        applied = asyncio.Event()
        start = time.perf_counter()
        with contextlib.suppress(RemoteProtocolError):
            session, events = self.bob.receive(ALICE, text)
            if runner is None:
                applied.set()
            elif any(isinstance(e, ev.SMPPending) for e in events):
                holder[0] = applied
                runner.kick(ALICE, session)
        await applied.wait()
        step_ms = (time.perf_counter() - start) * 1000
        await asyncio.sleep(0.02)
        stop = True
        await beat
        self.bob_s.smp_abort()
        relay(self.alice, self.bob, ALICE, BOB)
        return worst, step_ms

    def smp_case(self, kind: int, how: str) -> list[float]:
        waiting, genuine = self.steps[kind]
        payload = {
            "huge": huge_payload(kind),
            "max-range": max_range_payload(kind),
            "legit": genuine,
        }[how]
        return self.runs(lambda: self.data([(kind, payload)], waiting))

    def packed_smp(self) -> list[float]:
        """As many max-range SMP 1 TLVs as fit in one data message."""
        tlv = (TLV_SMP1, max_range_payload(TLV_SMP1))
        waiting, _ = self.steps[TLV_SMP1]
        return self.runs(lambda: self.data([tlv] * 60, waiting))

    def fresh_victim(self) -> Account:
        return Account(self.keys[1], our_tag=0x2222)

    def ake_case(self, how: str) -> list[float]:
        def one() -> float:
            victim = self.fresh_victim()
            mallory = Session(self.keys[2], our_tag=0x6666)
            if how.startswith("commit"):
                size = 1 << 20 if how == "commit-oversized" else 196
                text = DHCommit(
                    sender_tag=0x6666,
                    receiver_tag=0,
                    encrypted_gx=os.urandom(size),
                    hashed_gx=os.urandom(32),
                ).encode()
            elif how in ("key-oversized", "key-max"):
                victim.session(MALLORY).start_ake()
                victim.data_to_send()
                gy = (1 << (8 << 20)) - 1 if how == "key-oversized" else DH_P - 2
                text = DHKey(sender_tag=0x6666, receiver_tag=0x2222, gy=gy).encode()
            elif how.startswith("reveal"):
                mallory.start_ake()
                (commit,) = mallory.data_to_send()
                victim.receive(MALLORY, commit)
                text = mallory_answers(victim, mallory)
                if how == "reveal-garbage":
                    text = RevealSignature(
                        revealed_key=os.urandom(16), **garbage_signature()
                    ).encode()
                elif how == "reveal-bad-mac":
                    text = tamper_mac(text)
            else:  # signature-*
                victim.session(MALLORY).start_ake()
                victim.receive(MALLORY, mallory_answers(victim, mallory))
                text = mallory_answers(victim, mallory)
                if how == "signature-garbage":
                    text = Signature(**garbage_signature()).encode()
            return timed(victim, MALLORY, text)

        return self.runs(one)

    def huge_data(self, how: str) -> list[float]:
        def one() -> float:
            if how == "forged-max":
                text = forged_data(
                    0x1111, 120_000, old_mac_keys=os.urandom(70_000)
                ).encode()
            else:  # a body of the largest size parsed, all garbage
                text = "?OTR:" + "A" * (4 * 1024 * 1024 - 8) + "."
            ms = timed(self.bob, ALICE, text)
            self.bob.data_to_send()
            return ms

        return self.runs(one)

    def fragments(self, how: str) -> list[float]:
        if how == "one-4mib-fragment":
            text = f"?OTR|00006666|00002222,00001,00002,{'A' * (4 << 20)},"
            return self.runs(lambda: timed(self.fresh_victim(), MALLORY, text))
        if how == "flood":
            # Every fragment from another full JID and tag: the worst single one.
            victim = self.fresh_victim()
            out = []
            for n in range(self.repeats * 20):
                text = f"?OTR|{0x100 + n:08x}|00002222,00001,00002,{'A' * 16000},"
                out.append(timed(victim, f"m{n % 300}@x/{n}", text))
            return out
        # Fill a 250 KB message in 16 KiB pieces; the last completes it.
        whole = forged_data(0x6666, 180_000).encode()
        piece = 16 * 1024
        parts = [whole[i : i + piece] for i in range(0, len(whole), piece)]
        n = len(parts)
        texts = [
            f"?OTR|00006666|00002222,{k:05d},{n:05d},{p},"
            for k, p in enumerate(parts, start=1)
        ]
        out = []
        for _ in range(self.repeats):
            victim = self.fresh_victim()
            out.extend(timed(victim, MALLORY, t) for t in texts)
        return out


#: The event the runner's ``apply`` sets (one SMP message at a time).
holder: list[asyncio.Event] = [asyncio.Event()]


def applied(peer: str, session: Session, events: list[ev.Event]) -> None:
    holder[0].set()


def make_runner(executor: Executor | None) -> SMPRunner:
    return SMPRunner(apply=applied, alive=lambda peer, s: True, executor=executor)


async def stall_table(bench: Bench, repeats: int) -> dict[str, object]:
    """Loop stall and step time per SMP case and way of computing."""
    process = make_runner(None)
    thread_pool = ThreadPoolExecutor(1)
    ways: dict[str, SMPRunner | None] = {
        "process": process,
        "thread": make_runner(thread_pool),
        "inline": None,
    }
    # The first SMP starts the worker process: measured apart.
    first_stall, first_step = await bench.loop_stall(TLV_SMP1, "legit", process)
    rows: dict[str, dict[str, float]] = {}
    for kind in (TLV_SMP1, TLV_SMP2, TLV_SMP3, TLV_SMP4):
        for how in ("max-range", "legit"):
            for way, runner in ways.items():
                runs = [
                    await bench.loop_stall(kind, how, runner) for _ in range(repeats)
                ]
                rows[f"SMP{kind - 1} {how} [{way}]"] = {
                    "runs": len(runs),
                    "max_stall_ms": round(max(r[0] for r in runs), 3),
                    "max_step_ms": round(max(r[1] for r in runs), 3),
                    "median_step_ms": round(statistics.median(r[1] for r in runs), 3),
                }
    process.close()
    thread_pool.shutdown()
    return {
        "worker_start_s": process.spawn_seconds,
        "first_smp": {
            "stall_ms": round(first_stall, 3),
            "step_ms": round(first_step, 3),
        },
        "rows": rows,
    }


def tamper_mac(text: str) -> str:
    raw = bytearray(base64.b64decode(text[5:-1]))
    raw[-1] ^= 1
    return "?OTR:" + base64.b64encode(bytes(raw)).decode() + "."


def reference(repeats: int) -> list[float]:
    out = []
    for _ in range(max(repeats, 50)):
        x = rand_exponent()
        start = time.perf_counter()
        pow(DH_G, x, DH_P)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    add_json_option(parser, "otr_stall")
    args = parser.parse_args()
    bench = Bench([PrivateKey.generate() for _ in range(3)], args.repeats)
    cases: dict[str, Callable[[], list[float]]] = {}
    for kind in (TLV_SMP1, TLV_SMP2, TLV_SMP3, TLV_SMP4):
        for how in ("huge", "max-range", "legit"):
            name = f"SMP{kind - 1} {how}"
            cases[name] = lambda kind=kind, how=how: bench.smp_case(kind, how)
    cases["60 SMP1 TLVs in one message"] = bench.packed_smp
    for how in (
        "commit-oversized",
        "commit-max",
        "key-oversized",
        "key-max",
        "reveal-garbage",
        "reveal-bad-mac",
        "reveal-legit",
        "signature-garbage",
        "signature-bad-mac",
        "signature-legit",
    ):
        cases[f"D-H/AKE {how}"] = lambda how=how: bench.ake_case(how)
    cases["data message, forged, 256 KiB"] = lambda: bench.huge_data("forged-max")
    cases["body of 4 MiB garbage"] = lambda: bench.huge_data("garbage-4mib")
    cases["one 4 MiB fragment"] = lambda: bench.fragments("one-4mib-fragment")
    cases["fragment flood (16 KB each)"] = lambda: bench.fragments("flood")
    cases["250 KB message in 16 KiB fragments"] = lambda: bench.fragments("fill")

    ref = reference(args.repeats)
    ref_median = statistics.median(ref)
    rows = {}
    for name, run in cases.items():
        times = run()
        rows[name] = {
            "runs": len(times),
            "max_ms": round(max(times), 3),
            "median_ms": round(statistics.median(times), 3),
            "max_in_modexps": round(max(times) / ref_median, 1),
        }
    stalls = asyncio.run(stall_table(bench, args.repeats))
    ref_again = statistics.median(reference(args.repeats))

    print(
        f"\none modexp (1536-bit p, 1536-bit exponent): median {ref_median:.3f} ms "
        f"(again at the end: {ref_again:.3f} ms)"
    )
    print(
        f"{'hostile input':36} {'runs':>5} {'max ms':>8} {'median ms':>10} {'max/modexp':>11}"
    )
    for name, r in rows.items():
        print(
            f"{name:36} {r['runs']:>5} {r['max_ms']:>8.2f} {r['median_ms']:>10.2f} "
            f"{r['max_in_modexps']:>11.1f}"
        )
    worst = max(rows, key=lambda k: rows[k]["max_ms"])
    print(
        f"worst: {worst}, {rows[worst]['max_ms']:.2f} ms = "
        f"{rows[worst]['max_in_modexps']} x one modexp (target: under 10 ms)"
    )
    srows: dict[str, dict[str, float]] = stalls["rows"]  # type: ignore[assignment]
    print(
        f"\nevent loop stall, one SMP message the adapter's way (heartbeat every "
        f"1 ms); worker process start: {stalls['worker_start_s']:.3f} s, first "
        f"SMP (with that start): {stalls['first_smp']}"
    )
    print(
        f"{'SMP message [where computed]':36} {'runs':>5} {'stall ms':>9} "
        f"{'stall/modexp':>13} {'step ms max':>12} {'median':>8}"
    )
    for name, r in srows.items():
        r["max_stall_in_modexps"] = round(r["max_stall_ms"] / ref_median, 2)
        print(
            f"{name:36} {r['runs']:>5} {r['max_stall_ms']:>9.2f} "
            f"{r['max_stall_in_modexps']:>13.2f} {r['max_step_ms']:>12.1f} "
            f"{r['median_step_ms']:>8.1f}"
        )
    report = {
        "repeats": args.repeats,
        "reference_modexp_ms": {
            "median": round(ref_median, 4),
            "median_at_end": round(ref_again, 4),
        },
        "results": rows,
        "worst": {"case": worst, **rows[worst]},
        "event_loop": stalls,
    }
    write_report(args.json, "otr_stall", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
