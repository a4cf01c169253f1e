"""SMP inside an OTR session: starting, answering and aborting the
exchange, and the queue of its steps, which may be computed elsewhere.

:class:`SessionSMP` is the SMP half of :class:`~xfer.otr.session.Session`,
which derives from it: the SMP machine of the conversation, the steps waiting
for it, and what the SMP TLVs (2 to 7) of a data message do. The session
gives it the conversation's fingerprints and sends its replies; it keeps the
keys, counters and outbox to itself.

SMP off the caller's thread (``Policy.defer_smp``): one SMP step costs up to
about two dozen 1536-bit exponentiations, a quarter of a second, which an
event loop cannot afford for every message any peer sends. With the policy,
an SMP TLV (and ``smp_start``/``smp_answer``) only queues the step and
``receive`` reports :class:`~xfer.otr.events.SMPPending`; the caller takes
the job (``smp_next``), computes it where it likes with the pure
:func:`~xfer.otr.smp.run_smp_job`, and applies the result here
(``smp_finish``), which sends the reply and returns the SMP events, exactly
those an inline step returns. Without the policy the step runs inline, as
``smp_run`` does. Keys, counters and the outbox are only ever touched by the
session's own calls. At most :data:`SMP_QUEUE_LIMIT` steps are in flight or
waiting; one more is out of order (SMP runs one exchange at a time) and
aborts the exchange. An abort, the end of the conversation or a new AKE
makes the step in flight stale: ``smp_finish`` then ignores its result. A
new AKE reports an exchange under way as aborted, but starts our user's own
SMP again if its SMP 1 has not gone out yet (``spec/otr.md`` section 3.1).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from xfer.errors import LocalProtocolError
from xfer.otr import events as ev
from xfer.otr.smp import (
    SMP,
    TLV_SMP1,
    TLV_SMP1Q,
    TLV_SMP2,
    TLV_SMP3,
    TLV_SMP4,
    TLV_SMP_ABORT,
    SMPDone,
    SMPInput,
    SMPJob,
    SMPOutcome,
    SMPState,
    check_question,
    run_smp_job,
    smp_secret,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.session import Policy

__all__ = ["SMP_INPUTS", "SMP_QUEUE_LIMIT", "SessionSMP"]

#: The SMP TLVs and the input each is to the SMP machine.
SMP_INPUTS = {
    TLV_SMP1: SMPInput.RECV_1,
    TLV_SMP1Q: SMPInput.RECV_1,
    TLV_SMP2: SMPInput.RECV_2,
    TLV_SMP3: SMPInput.RECV_3,
    TLV_SMP4: SMPInput.RECV_4,
    TLV_SMP_ABORT: SMPInput.RECV_ABORT,
}
#: SMP steps a session holds at once, in flight and waiting: one being
#: computed and one behind it (both users started at once; or the peer's
#: step arrived while our own user's was computed). SMP runs one exchange at
#: a time, so a step beyond these is out of order and aborts the exchange.
SMP_QUEUE_LIMIT = 2


class SessionSMP:
    """The SMP of one session; a base of :class:`~xfer.otr.session.Session`.

    The session calls :meth:`_smp_setup` when it is made and provides
    ``policy`` (its ``defer_smp``), ``their_fingerprint``, ``_random``,
    :meth:`_smp_fingerprints` and :meth:`_smp_transmit`.
    """

    policy: Policy
    their_fingerprint: bytes | None
    _random: Callable[[int], bytes]

    def _smp_setup(self) -> None:
        self.smp = SMP(self._random)
        #: SMP steps waiting to be computed, oldest first.
        self._smp_queue: collections.deque[tuple[SMPInput, object]] = (
            collections.deque()
        )
        self._smp_tickets = 0
        #: The ticket of the step being computed, if one is.
        self._smp_in_flight: int | None = None
        #: (ticket, fingerprint) of a step under way when the peer ended the
        #: conversation: only its verdict still counts.
        self._smp_verdict_only: tuple[int, bytes] | None = None
        #: (secret, question) of our user's smp_start whose SMP 1 has not
        #: gone out yet: a re-key starts it again on the new keys.
        self._smp_unsent: tuple[bytes, str | None] | None = None

    def _smp_fingerprints(self) -> tuple[bytes, bytes, bytes]:
        """(ours, theirs, ssid) of the encrypted conversation, for the secret.

        Raises:
            LocalProtocolError: the conversation is not encrypted.
        """
        raise NotImplementedError  # the session's

    def _smp_transmit(self, tlvs: list[tuple[int, bytes]]) -> None:
        """Send SMP TLVs to the peer if the conversation is encrypted."""
        raise NotImplementedError  # the session's

    # -- our user's calls ------------------------------------------------------

    def smp_start(self, secret: bytes, question: str | None = None) -> None:
        """Start SMP with ``secret`` (and a question for the peer's user).

        With ``Policy.defer_smp`` the step is only queued: run it with
        ``smp_next``/``smp_finish`` (or ``smp_run``).

        Raises:
            LocalProtocolError: not ENCRYPTED; the question holds a NUL; an
                SMP step is still being computed (wait for its events, or
                ``smp_abort`` first).
        """
        ours, theirs, ssid = self._smp_fingerprints()
        check_question(question)
        self._smp_check_idle()
        x = smp_secret(ours, theirs, ssid, secret)
        self._smp_enqueue(SMPInput.START, (x, question))
        if self.smp_busy:  # (not already run inline, nor refused)
            self._smp_unsent = (secret, question)

    def smp_answer(self, secret: bytes) -> None:
        """Answer the peer's SMP (after :class:`~xfer.otr.events.SMPAsked`).

        Raises:
            LocalProtocolError: not ENCRYPTED; no question waits for an
                answer; an SMP step is still being computed.
        """
        ours, theirs, ssid = self._smp_fingerprints()
        self._smp_check_idle()
        if self.smp.state is not SMPState.AWAITING_SECRET:
            msg = f"no SMP secret is expected in state {self.smp.state.value}"
            raise LocalProtocolError(msg)
        x = smp_secret(theirs, ours, ssid, secret)
        self._smp_enqueue(SMPInput.SECRET, x)

    def smp_abort(self) -> list[ev.Event]:
        """Give up the exchange: tell the peer (TLV 6); drop any step queued
        or being computed (its result will be ignored)."""
        self._smp_drop_work()
        return self._smp_send(self.smp.handle(SMPInput.ABORT))

    # -- deferred steps --------------------------------------------------------

    @property
    def smp_busy(self) -> bool:
        """Whether an SMP step is being computed or waits to be."""
        return self._smp_in_flight is not None or bool(self._smp_queue)

    def smp_next(self) -> SMPJob | None:
        """Take the next SMP step to compute, or None (none waits, or one is
        already being computed: steps run one at a time, in order).

        The job holds a copy of the SMP machine; compute it with
        :func:`~xfer.otr.smp.run_smp_job` on any thread or process and give
        the result to :meth:`smp_finish`.
        """
        if self._smp_in_flight is not None or not self._smp_queue:
            return None
        kind, value = self._smp_queue.popleft()
        self._smp_tickets += 1
        self._smp_in_flight = self._smp_tickets
        return SMPJob(
            ticket=self._smp_tickets, machine=self.smp.copy(), kind=kind, value=value
        )

    def smp_finish(self, done: SMPDone) -> list[ev.Event]:
        """Apply a computed step: send its reply, return its SMP events (plus
        :class:`~xfer.otr.events.SMPPending` if another step waits).

        A result that is not for the step in flight (it was aborted, or the
        conversation ended or was re-keyed meanwhile) is ignored: ``[]``;
        except that if the peer ended the conversation (TLV 1) while the step
        was computed, its verdict (``SMPSucceeded``/``SMPFailed``, for the
        fingerprint of that conversation) is still returned, with no reply.
        """
        orphan = self._smp_verdict_only
        if orphan is not None and done.ticket == orphan[0]:
            self._smp_verdict_only = None
            if done.outcome.event == "succeeded":
                return [ev.SMPSucceeded(fingerprint=orphan[1])]
            if done.outcome.event in {"failed", "cheated"}:
                return [ev.SMPFailed(cheated=done.outcome.event == "cheated")]
            return []
        if self._smp_in_flight is None or done.ticket != self._smp_in_flight:
            return []
        self._smp_in_flight = None
        self._smp_unsent = None  # (the first step after smp_start is its own)
        self.smp = done.machine
        events = self._smp_send(done.outcome)
        if self._smp_queue:
            events.append(ev.SMPPending())
        return events

    def smp_run(self) -> list[ev.Event]:
        """Compute every waiting SMP step here and now; return their events."""
        events: list[ev.Event] = []
        while (job := self.smp_next()) is not None:
            done = self.smp_finish(run_smp_job(job))
            events.extend(e for e in done if not isinstance(e, ev.SMPPending))
        return events

    def _smp_check_idle(self) -> None:
        if self.smp_busy:
            raise LocalProtocolError("an SMP step is still being computed")

    def _smp_enqueue(self, kind: SMPInput, value: object) -> list[ev.Event]:
        held = len(self._smp_queue) + (self._smp_in_flight is not None)
        if held >= SMP_QUEUE_LIMIT:
            # More steps than one exchange has room for: out of order.
            self._smp_drop_work()
            return self._smp_send(self.smp.handle(SMPInput.ABORT))
        self._smp_queue.append((kind, value))
        if not self.policy.defer_smp:
            return self.smp_run()
        return [ev.SMPPending()]

    def _smp_drop_work(self) -> bool:
        """Forget queued steps and the one in flight; whether there were any."""
        had = self.smp_busy
        self._smp_queue.clear()
        self._smp_in_flight = None
        self._smp_unsent = None
        return had

    def _smp_reset(self) -> None:
        self._smp_drop_work()
        self._smp_verdict_only = None
        self.smp = SMP(self._random)

    def _smp_send(self, outcome: SMPOutcome) -> list[ev.Event]:
        if outcome.tlvs:
            self._smp_transmit(list(outcome.tlvs))
        if outcome.event == "asked":
            return [ev.SMPAsked(question=outcome.question)]
        if outcome.event == "succeeded":
            assert self.their_fingerprint is not None
            return [ev.SMPSucceeded(fingerprint=self.their_fingerprint)]
        if outcome.event in {"failed", "cheated"}:
            return [ev.SMPFailed(cheated=outcome.event == "cheated")]
        if outcome.event == "aborted":
            return [ev.SMPAborted()]
        return []

    # -- from the peer ---------------------------------------------------------

    def _smp_tlv(self, kind: int, value: bytes) -> list[ev.Event]:
        """An SMP TLV (a key of :data:`SMP_INPUTS`) in a data message."""
        smp_input = SMP_INPUTS[kind]
        if smp_input is SMPInput.RECV_ABORT:
            # Costs nothing, and supersedes whatever was queued or computed.
            dropped = self._smp_drop_work()
            events = self._smp_send(self.smp.handle(SMPInput.RECV_ABORT))
            return events or ([ev.SMPAborted()] if dropped else [])
        arg: object = (kind, value) if smp_input is SMPInput.RECV_1 else value
        return self._smp_enqueue(smp_input, arg)

    def _smp_rekeyed(self, *, same_peer: bool) -> list[ev.Event]:
        """A new AKE finished (the conversation has new keys and ssid): SMP
        starts over, for its secret is bound to the ssid. If our user
        started SMP and its SMP 1 has not gone out yet, it is started again
        on the new keys (the peer saw nothing of it), unless the peer now
        proves another key; an exchange that was under way is over, and is
        reported as aborted (the peer's side, re-keyed too, starts over)."""
        unsent = self._smp_unsent if same_peer else None
        under_way = (
            self.smp_busy
            or self.smp.state is not SMPState.EXPECT1
            or self._smp_verdict_only is not None
        )
        self._smp_reset()
        if unsent is not None:
            secret, question = unsent
            self.smp_start(secret, question)
            return [ev.SMPPending()] if self.smp_busy else []
        return [ev.SMPAborted()] if under_way else []

    def _smp_peer_ended(self) -> None:
        """The peer ended the conversation (TLV 1): SMP starts over."""
        held, fingerprint = self._smp_in_flight, self.their_fingerprint
        self._smp_reset()
        if held is not None and fingerprint is not None:
            # The peer may send its last SMP message and end at once: the
            # exchange is over, and its verdict is still ours to see.
            self._smp_verdict_only = (held, fingerprint)
