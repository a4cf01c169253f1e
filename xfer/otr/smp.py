"""The Socialist Millionaires' Protocol, version 1 (Protocol-v3, "SMP").

Alice and Bob learn whether they typed the same secret, and nothing else,
over an encrypted OTR session; a match proves there is no man in the middle,
since the secret is bound to both long-term fingerprints and the session id::

    x = SHA-256(0x01 || initiator_fp || responder_fp || ssid || secret)

Group arithmetic is modulo the 1536-bit prime p, exponent arithmetic modulo
q = (p - 1) / 2, and g1 = 2. Every zero-knowledge proof hashes with
``c = SHA-256(version || MPI(a) [|| MPI(b)])``, read as an integer.

Messages travel as TLVs 2 to 7 (:data:`TLV_SMP1` ...). The machine is data:
:data:`TRANSITIONS` covers every (state, input) pair. A message that arrives
out of order aborts the exchange (we send TLV 6) as the spec says; a proof
that fails ends it as a failure ("cheated").

Off the caller's thread
-----------------------
One step costs up to about two dozen 1536-bit exponentiations (a quarter of
a second in CPython), too long for an event loop. So a step can also be run
as a job: :class:`SMPJob` holds a copy of the machine (its state, values and
random source: plain data, picklable when the random source is, such as
``os.urandom``) and the input; :func:`run_smp_job` computes it anywhere (a
worker process or thread) and touches nothing else; the result,
:class:`SMPDone`, holds the next machine and the outcome, which the session
applies on its own thread (``Session.smp_finish``). The ``ticket`` lets the
session refuse a result that an abort, a re-key or the end of the
conversation made stale.
"""

from __future__ import annotations

import enum
from copy import copy as _shallow_copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr.crypto import DH_G, DH_MODULUS_BYTES, DH_P, DH_Q, sha256
from xfer.otr.data import Reader, encode_int, encode_mpi

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "SMP",
    "TLV_SMP1",
    "TLV_SMP1Q",
    "TLV_SMP2",
    "TLV_SMP3",
    "TLV_SMP4",
    "TLV_SMP_ABORT",
    "TRANSITIONS",
    "SMPDone",
    "SMPInput",
    "SMPJob",
    "SMPOutcome",
    "SMPState",
    "check_question",
    "run_smp_job",
    "smp_secret",
]

TLV_SMP1 = 2
TLV_SMP2 = 3
TLV_SMP3 = 4
TLV_SMP4 = 5
TLV_SMP_ABORT = 6
TLV_SMP1Q = 7
#: Random exponents are 1536 bits, as libotr draws them.
_EXPONENT_BYTES = 192


class SMPState(enum.Enum):
    EXPECT1 = "expect1"
    #: We received SMP 1 and wait for our user's secret.
    AWAITING_SECRET = "awaiting-secret"  # noqa: S105 - a state name
    EXPECT2 = "expect2"
    EXPECT3 = "expect3"
    EXPECT4 = "expect4"


class SMPInput(enum.Enum):
    START = "start"  # our user starts, with a secret
    SECRET = "secret"  # noqa: S105 - our user answers a started exchange
    ABORT = "abort"  # our user gives up
    RECV_1 = "recv-1"
    RECV_2 = "recv-2"
    RECV_3 = "recv-3"
    RECV_4 = "recv-4"
    RECV_ABORT = "recv-abort"


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPOutcome:
    """What one step produced: TLVs to send and, maybe, news for the user."""

    tlvs: tuple[tuple[int, bytes], ...] = ()
    #: "asked" (the peer started; question may be set), "succeeded", "failed",
    #: "cheated" (a proof did not verify), "aborted", or None.
    event: str | None = None
    question: str | None = None


def check_question(question: str | None) -> None:
    """Raises LocalProtocolError if ``question`` cannot travel in TLV 7."""
    if question is not None and "\x00" in question:
        raise LocalProtocolError("an SMP question cannot contain NUL")


def smp_secret(
    initiator_fp: bytes, responder_fp: bytes, ssid: bytes, secret: bytes
) -> int:
    """x = SHA-256(0x01 || initiator fp || responder fp || ssid || secret)."""
    return int.from_bytes(
        sha256(b"\x01" + initiator_fp + responder_fp + ssid + secret), "big"
    )


def _h(version: int, a: int, b: int | None = None) -> int:
    data = bytes([version]) + encode_mpi(a) + (b"" if b is None else encode_mpi(b))
    return int.from_bytes(sha256(data), "big")


def _encode(values: list[int]) -> bytes:
    return encode_int(len(values)) + b"".join(encode_mpi(v) for v in values)


#: The kinds of value an SMP message carries, one letter each in a layout:
#: ``g`` a group element, ``c`` a challenge (a SHA-256 value), ``d`` an
#: exponent of a proof. The bounds are those of Protocol-v3 and libotr.
_LAYOUT_1 = "gcdgcd"
_LAYOUT_2 = "gcdgcdggcdd"
_LAYOUT_3 = "ggcddgcd"
_LAYOUT_4 = "gcd"
_MAX_BYTES = {"g": DH_MODULUS_BYTES, "c": 32, "d": DH_MODULUS_BYTES}


def _decode(data: bytes, layout: str) -> list[int]:
    """Read and check the values of one SMP message.

    Every value is bounded before it is used in any arithmetic, since the
    peer chooses them: a group element is at most as long as p and
    2 <= g <= p - 2; a challenge is below 2^256; an exponent is 1 <= d < q.
    Only then is each group element checked to lie in the subgroup of order
    q (one exponentiation by q each); without that check an element of order
    2q would leak a bit of our secret exponents per run.

    Raises:
        RemoteProtocolError: a value is malformed or out of range.
    """
    reader = Reader(data)
    if reader.u32() != len(layout):
        raise RemoteProtocolError("SMP message has the wrong number of values")
    values = [reader.mpi(_MAX_BYTES[kind]) for kind in layout]
    reader.end()
    for kind, v in zip(layout, values, strict=True):
        if kind == "g" and not 2 <= v <= DH_P - 2:
            raise RemoteProtocolError("SMP group element out of range")
        if kind == "c" and v >> 256:
            raise RemoteProtocolError("SMP challenge out of range")
        if kind == "d" and not 1 <= v < DH_Q:
            raise RemoteProtocolError("SMP exponent out of range")
    for kind, v in zip(layout, values, strict=True):
        if kind == "g" and pow(v, DH_Q, DH_P) != 1:
            raise RemoteProtocolError("SMP group element is not in the subgroup")
    return values


def _inv(value: int) -> int:
    return pow(value, -1, DH_P)


class SMP:
    """One side of SMP within one OTR session.

    Args:
        random: a source of random bytes.
    """

    def __init__(self, random: Callable[[int], bytes]) -> None:
        self._random = random
        self.state = SMPState.EXPECT1
        self._v: dict[str, int] = {}

    def handle(self, kind: SMPInput, value: object = None) -> SMPOutcome:
        """Feed one input; see :data:`TRANSITIONS`.

        ``value`` is, for START: ``(x, question or None)``; for SECRET: ``x``;
        for RECV_*: the TLV's bytes (for RECV_1, ``(type, bytes)``).

        Raises:
            LocalProtocolError: SECRET when nothing waits for one.
        """
        return TRANSITIONS[self.state, kind](self, value)

    def copy(self) -> SMP:
        """An independent machine in the same state (values are ints)."""
        twin = _shallow_copy(self)
        twin._v = dict(self._v)
        return twin

    def step(self, kind: SMPInput, value: object = None) -> tuple[SMP, SMPOutcome]:
        """The pure form of :meth:`handle`: the next machine and the outcome.

        ``self`` is left as it was. A peer's value that does not even parse
        ends the exchange (as an abort, TLV 6 to the peer).

        Raises:
            LocalProtocolError: as :meth:`handle` (our own user's misuse).
        """
        after = self.copy()
        try:
            return after, after.handle(kind, value)
        except RemoteProtocolError:
            after = self.copy()
            return after, after.handle(SMPInput.ABORT)

    def _rand(self) -> int:
        return int.from_bytes(self._random(_EXPONENT_BYTES), "big")

    def _reset(self) -> None:
        self.state = SMPState.EXPECT1
        self._v = {}

    # -- handlers ------------------------------------------------------------

    def _misuse(self, value: object) -> SMPOutcome:
        msg = f"no SMP secret is expected in state {self.state.value}"
        raise LocalProtocolError(msg)

    def _abort(self, value: object) -> SMPOutcome:
        """Out of order, or our user gave up: tell the peer, start over."""
        self._reset()
        return SMPOutcome(tlvs=((TLV_SMP_ABORT, b""),), event="aborted")

    def _peer_aborted(self, value: object) -> SMPOutcome:
        was_idle = self.state is SMPState.EXPECT1
        self._reset()
        return SMPOutcome(event=None if was_idle else "aborted")

    def _cheated(self) -> SMPOutcome:
        self._reset()
        return SMPOutcome(tlvs=((TLV_SMP_ABORT, b""),), event="cheated")

    def _start(self, value: object) -> SMPOutcome:
        assert isinstance(value, tuple)
        x, question = value
        self._reset()
        a2, a3, r2, r3 = self._rand(), self._rand(), self._rand(), self._rand()
        g2a, g3a = pow(DH_G, a2, DH_P), pow(DH_G, a3, DH_P)
        c2 = _h(1, pow(DH_G, r2, DH_P))
        d2 = (r2 - a2 * c2) % DH_Q
        c3 = _h(2, pow(DH_G, r3, DH_P))
        d3 = (r3 - a3 * c3) % DH_Q
        self._v = {"x": x, "a2": a2, "a3": a3, "g2a": g2a, "g3a": g3a}
        payload = _encode([g2a, c2, d2, g3a, c3, d3])
        self.state = SMPState.EXPECT2
        if question is None:
            return SMPOutcome(tlvs=((TLV_SMP1, payload),))
        check_question(question)
        q = question.encode("utf-8")
        return SMPOutcome(tlvs=((TLV_SMP1Q, q + b"\x00" + payload),))

    def _receive_1(self, value: object) -> SMPOutcome:
        assert isinstance(value, tuple)
        kind, data = value
        question = None
        if kind == TLV_SMP1Q:
            raw_q, sep, data = data.partition(b"\x00")
            if not sep:
                return self._cheated()  # not NUL-terminated
            question = raw_q.decode("utf-8", errors="replace")
        try:
            g2a, c2, d2, g3a, c3, d3 = _decode(data, _LAYOUT_1)
        except RemoteProtocolError:
            return self._cheated()
        if c2 != _h(1, pow(DH_G, d2, DH_P) * pow(g2a, c2, DH_P) % DH_P) or c3 != _h(
            2, pow(DH_G, d3, DH_P) * pow(g3a, c3, DH_P) % DH_P
        ):
            return self._cheated()
        self._v = {"g2a": g2a, "g3a": g3a}
        self.state = SMPState.AWAITING_SECRET
        return SMPOutcome(event="asked", question=question)

    def _answer(self, value: object) -> SMPOutcome:
        assert isinstance(value, int)
        y = value
        v = self._v
        b2, b3, r2, r3, r4, r5, r6 = (self._rand() for _ in range(7))
        g2b, g3b = pow(DH_G, b2, DH_P), pow(DH_G, b3, DH_P)
        c2 = _h(3, pow(DH_G, r2, DH_P))
        d2 = (r2 - b2 * c2) % DH_Q
        c3 = _h(4, pow(DH_G, r3, DH_P))
        d3 = (r3 - b3 * c3) % DH_Q
        g2, g3 = pow(v["g2a"], b2, DH_P), pow(v["g3a"], b3, DH_P)
        pb = pow(g3, r4, DH_P)
        qb = pow(DH_G, r4, DH_P) * pow(g2, y, DH_P) % DH_P
        cp = _h(5, pow(g3, r5, DH_P), pow(DH_G, r5, DH_P) * pow(g2, r6, DH_P) % DH_P)
        d5 = (r5 - r4 * cp) % DH_Q
        d6 = (r6 - y * cp) % DH_Q
        self._v = {"g3a": v["g3a"], "b3": b3, "g2": g2, "g3": g3, "pb": pb, "qb": qb}
        self.state = SMPState.EXPECT3
        payload = _encode([g2b, c2, d2, g3b, c3, d3, pb, qb, cp, d5, d6])
        return SMPOutcome(tlvs=((TLV_SMP2, payload),))

    def _receive_2(self, value: object) -> SMPOutcome:
        assert isinstance(value, bytes)
        try:
            g2b, c2, d2, g3b, c3, d3, pb, qb, cp, d5, d6 = _decode(value, _LAYOUT_2)
        except RemoteProtocolError:
            return self._cheated()
        v = self._v
        if c2 != _h(3, pow(DH_G, d2, DH_P) * pow(g2b, c2, DH_P) % DH_P) or c3 != _h(
            4, pow(DH_G, d3, DH_P) * pow(g3b, c3, DH_P) % DH_P
        ):
            return self._cheated()
        g2, g3 = pow(g2b, v["a2"], DH_P), pow(g3b, v["a3"], DH_P)
        if cp != _h(
            5,
            pow(g3, d5, DH_P) * pow(pb, cp, DH_P) % DH_P,
            pow(DH_G, d5, DH_P) * pow(g2, d6, DH_P) * pow(qb, cp, DH_P) % DH_P,
        ):
            return self._cheated()
        r4, r5, r6, r7 = (self._rand() for _ in range(4))
        x, a3 = v["x"], v["a3"]
        pa = pow(g3, r4, DH_P)
        qa = pow(DH_G, r4, DH_P) * pow(g2, x, DH_P) % DH_P
        cp2 = _h(6, pow(g3, r5, DH_P), pow(DH_G, r5, DH_P) * pow(g2, r6, DH_P) % DH_P)
        d5a = (r5 - r4 * cp2) % DH_Q
        d6a = (r6 - x * cp2) % DH_Q
        qab = qa * _inv(qb) % DH_P
        ra = pow(qab, a3, DH_P)
        cr = _h(7, pow(DH_G, r7, DH_P), pow(qab, r7, DH_P))
        d7 = (r7 - a3 * cr) % DH_Q
        self._v = {"g3b": g3b, "a3": a3, "pab": pa * _inv(pb) % DH_P, "qab": qab}
        self.state = SMPState.EXPECT4
        payload = _encode([pa, qa, cp2, d5a, d6a, ra, cr, d7])
        return SMPOutcome(tlvs=((TLV_SMP3, payload),))

    def _receive_3(self, value: object) -> SMPOutcome:
        assert isinstance(value, bytes)
        try:
            pa, qa, cp, d5, d6, ra, cr, d7 = _decode(value, _LAYOUT_3)
        except RemoteProtocolError:
            return self._cheated()
        v = self._v
        g2, g3 = v["g2"], v["g3"]
        if cp != _h(
            6,
            pow(g3, d5, DH_P) * pow(pa, cp, DH_P) % DH_P,
            pow(DH_G, d5, DH_P) * pow(g2, d6, DH_P) * pow(qa, cp, DH_P) % DH_P,
        ):
            return self._cheated()
        qab = qa * _inv(v["qb"]) % DH_P
        if cr != _h(
            7,
            pow(DH_G, d7, DH_P) * pow(v["g3a"], cr, DH_P) % DH_P,
            pow(qab, d7, DH_P) * pow(ra, cr, DH_P) % DH_P,
        ):
            return self._cheated()
        r7 = self._rand()
        b3 = v["b3"]
        rb = pow(qab, b3, DH_P)
        cr2 = _h(8, pow(DH_G, r7, DH_P), pow(qab, r7, DH_P))
        d7b = (r7 - b3 * cr2) % DH_Q
        rab = pow(ra, b3, DH_P)
        matched = rab == pa * _inv(v["pb"]) % DH_P
        self._reset()
        return SMPOutcome(
            tlvs=((TLV_SMP4, _encode([rb, cr2, d7b])),),
            event="succeeded" if matched else "failed",
        )

    def _receive_4(self, value: object) -> SMPOutcome:
        assert isinstance(value, bytes)
        try:
            rb, cr, d7 = _decode(value, _LAYOUT_4)
        except RemoteProtocolError:
            return self._cheated()
        v = self._v
        if cr != _h(
            8,
            pow(DH_G, d7, DH_P) * pow(v["g3b"], cr, DH_P) % DH_P,
            pow(v["qab"], d7, DH_P) * pow(rb, cr, DH_P) % DH_P,
        ):
            return self._cheated()
        rab = pow(rb, v["a3"], DH_P)
        matched = rab == v["pab"]
        self._reset()
        return SMPOutcome(event="succeeded" if matched else "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPJob:
    """One SMP step to compute, away from the session that asked for it.

    ``machine`` is the session's machine as it was when the job was taken (a
    copy: the worker owns it); ``ticket`` names the job to its session.
    """

    ticket: int
    machine: SMP
    kind: SMPInput
    value: object = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SMPDone:
    """The result of :func:`run_smp_job`, for ``Session.smp_finish``."""

    ticket: int
    machine: SMP
    outcome: SMPOutcome


def run_smp_job(job: SMPJob) -> SMPDone:
    """Compute one step (all its exponentiations); a pure function of the job.

    A module-level function, so that a process pool can run it: the job and
    its result pickle (ints, bytes, enums; the random source by reference).
    """
    machine, outcome = job.machine.step(job.kind, job.value)
    return SMPDone(ticket=job.ticket, machine=machine, outcome=outcome)


_S, _I = SMPState, SMPInput
_RECEIVES = (_I.RECV_1, _I.RECV_2, _I.RECV_3, _I.RECV_4)
#: Every (state, input) pair. Receiving a message other than the one a state
#: expects aborts (Protocol-v3: "If smpstate is not ..., set smpstate to
#: SMPSTATE_EXPECT1 and send a type 6 TLV"); RECV_1 in EXPECT1 starts over.
TRANSITIONS: dict[tuple[SMPState, SMPInput], Callable[[SMP, object], SMPOutcome]] = {
    **{(s, _I.START): SMP._start for s in SMPState},
    **{(s, _I.ABORT): SMP._abort for s in SMPState},
    **{(s, _I.RECV_ABORT): SMP._peer_aborted for s in SMPState},
    **{(s, _I.SECRET): SMP._misuse for s in SMPState},
    **{(s, i): SMP._abort for s in SMPState for i in _RECEIVES},
    (_S.AWAITING_SECRET, _I.SECRET): SMP._answer,
    (_S.EXPECT1, _I.RECV_1): SMP._receive_1,
    (_S.EXPECT2, _I.RECV_2): SMP._receive_2,
    (_S.EXPECT3, _I.RECV_3): SMP._receive_3,
    (_S.EXPECT4, _I.RECV_4): SMP._receive_4,
}
