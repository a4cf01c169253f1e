"""Verifications (SMP) our user takes part in, for the ``xfer_otr`` plugin
(:mod:`xfer.xmpp.otr`), which owns one :class:`Verifier` and delegates to it
under the same method names.

* :meth:`Verifier.verify` starts SMP with a peer and waits for the outcome;
* :meth:`Verifier.next_question` takes a verification a peer started, and
  :meth:`Verifier.answer` answers it and waits for the outcome;
* every outcome, whoever started the exchange, goes through
  :meth:`Verifier.finished`, which applies the trust rule of
  :meth:`xfer.otr.trust.TrustStore.record_smp` (``spec/otr.md`` section 3.1)
  and saves the store if it changed.

An outcome is an :class:`~xfer.otr.trust.SMPResult`: succeeded, failed (the
secrets differ, or a proof did not verify) or aborted (by either side; also
when the peer ends the conversation or goes offline with no verdict left to
come). A wait that runs out gives up the exchange (an SMP abort to the peer)
and raises :class:`~xfer.errors.VerificationTimeout`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING

from xfer.errors import NotSecure, VerificationTimeout
from xfer.jid import bare_jid
from xfer.otr import events as ev
from xfer.otr.session import MessageState
from xfer.otr.smp import SMPState
from xfer.otr.trust import SMPResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.account import Account
    from xfer.otr.session import Session
    from xfer.otr.trust import TrustStore

__all__ = ["MAX_QUESTIONS", "Verifier"]

log = logging.getLogger(__name__)

#: Verification questions kept until somebody takes them.
MAX_QUESTIONS = 8


class Verifier:
    """The verifications of one account: questions, waiters, outcomes."""

    def __init__(
        self,
        *,
        account: Callable[[], Account],
        trust: Callable[[], TrustStore],
        flush: Callable[[], None],
        kick: Callable[[str, Session], None],
        computing: Callable[[Session], bool],
        trust_changed: Callable[[], None],
        announce: Callable[[str, object], None],
    ) -> None:
        # Looked up at each use: the plugin may set a new identity.
        self._account = account
        self._trust = trust
        self._flush = flush
        #: Hands a session's SMP work to the runner.
        self._kick = kick
        #: Whether the runner computes a step of this session right now.
        self._computing = computing
        self._trust_changed = trust_changed
        #: Fires an event of the plugin (``xfer_otr_smp_asked``, ...).
        self._announce = announce
        #: id(session) -> (peer, session, the caller waiting for the outcome).
        self._waiters: dict[int, tuple[str, Session, asyncio.Future[SMPResult]]] = {}
        #: Verifications peers started and nobody took yet (the latest few).
        self._questions: collections.deque[tuple[str, str | None]] = collections.deque(
            maxlen=MAX_QUESTIONS
        )
        self._asked = asyncio.Event()
        #: Peers (bare or full JIDs; None: anyone) whose question a caller of
        #: next_question waits for.
        self._awaiting: list[str | None] = []
        #: Full JIDs whose question was taken and is not answered yet.
        self._taken: set[str] = set()
        #: Those of them whose exchange was given up before the answer.
        self._withdrawn: set[str] = set()

    # -- what the plugin hands us ----------------------------------------------

    def asked(self, peer: str, question: str | None) -> None:
        """The full JID ``peer`` started a verification (``SMPAsked``)."""
        self._questions.append((peer, question))  # the latest few
        self._asked.set()
        self._announce("xfer_otr_smp_asked", (peer, question))

    def finished(
        self,
        peer: str,
        session: Session,
        event: ev.SMPSucceeded | ev.SMPFailed | ev.SMPAborted,
    ) -> None:
        """An exchange with ``peer`` over ``session`` ended: record it in the
        trust store, tell whoever waits for it."""
        fingerprint: bytes | None
        if isinstance(event, ev.SMPSucceeded):
            result, fingerprint = SMPResult.SUCCEEDED, event.fingerprint
        elif isinstance(event, ev.SMPFailed):
            # (The session's SMP starts over on a new AKE: the fingerprint of
            # an exchange's verdict is that of the session now.)
            result, fingerprint = SMPResult.FAILED, session.their_fingerprint
            if event.cheated:
                log.warning("SMP with %s failed: a proof did not verify", peer)
        else:
            result, fingerprint = SMPResult.ABORTED, None
        if fingerprint is not None and self._trust().record_smp(
            peer, fingerprint, result, now=int(time.time())
        ):
            self._trust_changed()
        self._settle(peer, session, result)

    def ended(self, peer: str, session: Session) -> None:
        """The conversation with ``peer`` over ``session`` ended (the peer
        sent TLV 1, or went offline), or a step of it was applied: an
        exchange with no step left to compute there is over, aborted."""
        if session.state is MessageState.ENCRYPTED and self._holds(peer, session):
            return
        if self._computing(session):
            return  # its verdict may still come (see Session.smp_finish)
        if id(session) in self._waiters or peer in self._taken or self._queued(peer):
            self._settle(peer, session, SMPResult.ABORTED)

    def matters(self, peer: str, session: Session) -> bool:
        """Whether an SMP with ``peer`` is one our user takes part in (or
        waits for), or with a trusted fingerprint: it is never refused for
        others' SMP work (see :class:`~xfer.xmpp.smp.SMPRunner`)."""
        if id(session) in self._waiters or peer in self._taken:
            return True
        if any(w in (peer, bare_jid(peer)) for w in self._awaiting):
            return True
        fingerprint = session.their_fingerprint
        return fingerprint is not None and self._trust().is_trusted(peer, fingerprint)

    def _holds(self, peer: str, session: Session) -> bool:
        return any(s is session for s in self._account().sessions(peer))

    def _queued(self, peer: str) -> bool:
        return any(who == peer for who, _ in self._questions)

    def _settle(self, peer: str, session: Session, result: SMPResult) -> None:
        if result is not SMPResult.SUCCEEDED:
            # A question of an exchange that is over can no longer be
            # answered: never show it, and tell a taker it was withdrawn.
            kept = [(w, q) for w, q in self._questions if w != peer]
            self._questions.clear()
            self._questions.extend(kept)
            if peer in self._taken:
                self._withdrawn.add(peer)
        found = self._waiters.pop(id(session), None)
        if found is not None and not found[2].done():
            found[2].set_result(result)
        self._announce("xfer_otr_smp_done", (peer, result))

    # -- API -------------------------------------------------------------------

    async def verify(
        self,
        peer: str,
        secret: bytes,
        *,
        question: str | None = None,
        timeout: float = 120,
    ) -> SMPResult:
        """Run SMP with the full JID ``peer``; see
        :meth:`xfer.xmpp.otr.XferOTR.verify`."""
        session = self._account().best(peer)
        if session is None:
            raise NotSecure(f"no private conversation with {peer}")
        session.smp_start(secret, question)  # raises before the waiter is kept
        return await self._outcome(peer, session, timeout)

    async def next_question(
        self, timeout: float | None = None, *, peer: str | None = None
    ) -> tuple[str, str | None]:
        """The next verification a peer started; see
        :meth:`xfer.xmpp.otr.XferOTR.next_question`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            for i, (who, question) in enumerate(self._questions):
                if peer is None or peer in (who, bare_jid(who)):
                    del self._questions[i]
                    self._taken.add(who)
                    self._withdrawn.discard(who)
                    return who, question
            self._asked.clear()
            left = None if deadline is None else max(deadline - loop.time(), 0)
            self._awaiting.append(peer)
            try:
                await asyncio.wait_for(self._asked.wait(), left)
            except TimeoutError:
                assert timeout is not None
                said = (
                    "nobody asked to verify"
                    if peer is None
                    else f"{peer} did not ask to verify"
                )
                raise VerificationTimeout(
                    f"{said} within {timeout:g} s", peer=peer, timeout=timeout
                ) from None
            finally:
                self._awaiting.remove(peer)

    async def answer(
        self, peer: str, secret: bytes, *, timeout: float = 120
    ) -> SMPResult:
        """Answer the verification ``peer`` started; see
        :meth:`xfer.xmpp.otr.XferOTR.answer`."""
        self._taken.discard(peer)
        if peer in self._withdrawn:
            self._withdrawn.discard(peer)
            return SMPResult.ABORTED
        session = self._account().best(peer)
        if session is None:
            raise NotSecure(f"no private conversation with {peer}")
        session.smp_answer(secret)  # raises before the waiter is kept
        return await self._outcome(peer, session, timeout)

    def answer_smp(self, peer: str, secret: bytes) -> None:
        """Answer without waiting; see :meth:`xfer.xmpp.otr.XferOTR.answer_smp`."""
        self._taken.discard(peer)
        self._withdrawn.discard(peer)
        session = self._account().best(peer)
        if session is None:
            raise NotSecure(f"no private conversation with {peer}")
        session.smp_answer(secret)
        self._kick(peer, session)
        self._flush()

    async def _outcome(self, peer: str, session: Session, timeout: float) -> SMPResult:
        """Our step is queued: compute it, wait for the outcome."""
        waiter: asyncio.Future[SMPResult] = asyncio.get_running_loop().create_future()
        self._waiters[id(session)] = (peer, session, waiter)
        self._kick(peer, session)
        self._flush()
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            # Give the exchange up, and tell the peer (TLV 6).
            if session.smp.state is not SMPState.EXPECT1 or session.smp_busy:
                for event in session.smp_abort():
                    if isinstance(event, ev.SMPAborted):
                        self.finished(peer, session, event)
                self._flush()
            said = f"no answer from {peer} within {timeout:g} s"
            raise VerificationTimeout(said, peer=peer, timeout=timeout) from None
        finally:
            self._waiters.pop(id(session), None)
