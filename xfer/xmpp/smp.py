"""The SMP runner of the ``xfer_otr`` plugin: deferred SMP steps, computed
off the event loop.

SMP never runs on the event loop: one step is up to about two dozen 1536-bit
exponentiations (a quarter of a second in CPython, whose ``pow`` holds the
GIL throughout), and anyone who finishes an AKE can send SMP messages. The
sessions defer their SMP steps (``Policy.defer_smp``) and :class:`SMPRunner`
computes them in a worker process, one step per session at a time and a few
in all; see ``spec/otr.md`` section 2, "Limits".
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING

from xfer.jid import strip_resource
from xfer.otr import events as ev
from xfer.otr.smp import SMPDone, SMPJob, run_smp_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.session import Session

__all__ = ["MAX_SMP_IN_FLIGHT", "SMPRunner"]

log = logging.getLogger(__name__)

#: SMP steps being computed or waiting for the worker, for all peers
#: together (one per session, and one per bare JID); more SMP work is
#: answered with an SMP abort.
MAX_SMP_IN_FLIGHT = 4


def _ready() -> bool:
    """Runs in a new worker: it is up and has imported what SMP needs."""
    return True


def _process_context() -> multiprocessing.context.BaseContext:
    """A start method that does not fork this (threaded) process: the fork
    server where there is one, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context(
        "forkserver" if "forkserver" in methods else "spawn"
    )


class SMPRunner:
    """Computes sessions' deferred SMP steps off the event loop.

    Each step runs as :func:`~xfer.otr.smp.run_smp_job` in a process pool of
    one worker (made on the first step, so a client that never sees SMP
    never starts it); a job that cannot be pickled (a session given a random
    source that does not pickle) runs in a thread instead. Per session one
    step at a time, its result applied on the loop before the next is taken,
    so results apply in order. At most ``max_in_flight`` sessions, and one
    per bare JID, have a step under way; a step beyond that is refused with
    an SMP abort (TLV 6 to the peer, ``SMPAborted`` to our side): a flood
    of SMP from many throw-away accounts queues no more than that much work.

    Args:
        apply: called on the loop with ``(peer, session, events)`` after a
            result was applied (or the step refused); it sends what the
            session queued and handles the events.
        alive: whether ``(peer, session)`` is still in use; for a session
            dropped meanwhile, the reply is thrown away and only a verdict
            (``SMPSucceeded``, ``SMPFailed``, ``SMPAborted``) is applied.
        executor: where to compute (None: the process pool above; the
            caller then owns neither it nor its shutdown).
        max_in_flight: see above.
        priority: whether ``(peer, session)`` is exempt from both bounds
            (our own user is verifying with that peer, or waits for its
            question, or its fingerprint is trusted): throw-away accounts
            must not be able to crowd out a verification that matters.
    """

    def __init__(
        self,
        *,
        apply: Callable[[str, Session, list[ev.Event]], None],
        alive: Callable[[str, Session], bool],
        executor: Executor | None = None,
        max_in_flight: int = MAX_SMP_IN_FLIGHT,
        priority: Callable[[str, Session], bool] | None = None,
    ) -> None:
        self._apply = apply
        self._alive = alive
        self._priority = priority
        self._given = executor
        self._pool: asyncio.Future[Executor] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._max = max_in_flight
        #: id(session) -> (bare JID, the task computing its step).
        self._running: dict[int, tuple[str, asyncio.Task[None]]] = {}
        #: Seconds the worker process took to start (once it has).
        self.spawn_seconds: float | None = None

    @property
    def in_flight(self) -> int:
        """Sessions with a step being computed or waiting for the worker."""
        return len(self._running)

    def computing(self, session: Session) -> bool:
        """Whether a step of ``session`` is under way here (its result, maybe
        a verdict, is still to be applied)."""
        return id(session) in self._running

    def kick(self, peer: str, session: Session) -> None:
        """``session`` may have SMP work (it reported ``SMPPending``, or our
        user started or answered): compute its next step, unless one of its
        steps is under way already (that one's end takes the next)."""
        if id(session) in self._running or not session.smp_busy:
            return
        bare = strip_resource(peer).lower()  # never raises on a peer's JID
        exempt = self._priority is not None and self._priority(peer, session)
        if not exempt and (
            len(self._running) >= self._max
            or any(b == bare for b, _ in self._running.values())
        ):
            log.info("too much SMP work under way: aborting SMP with %s", peer)
            self._apply(peer, session, session.smp_abort())
            return
        job = session.smp_next()
        if job is None:  # pragma: no cover (smp_busy and none in flight)
            return
        task = asyncio.ensure_future(self._compute(peer, session, job))
        self._running[id(session)] = (bare, task)

    async def _compute(self, peer: str, session: Session, job: SMPJob) -> None:
        try:
            executor = await self._executor_for(job)
            done: SMPDone = await asyncio.get_running_loop().run_in_executor(
                executor, run_smp_job, job
            )
        except asyncio.CancelledError:
            self._running.pop(id(session), None)
            raise
        except Exception:  # the worker died, or could not be started
            log.warning("an SMP step failed to compute", exc_info=True)
            self._running.pop(id(session), None)
            self._pool = None
            if self._alive(peer, session):
                self._apply(peer, session, session.smp_abort())
            return
        self._running.pop(id(session), None)
        if not self._alive(peer, session):
            # The session was dropped meanwhile (its peer went offline):
            # nobody gets a reply, nothing more is computed, and only a
            # verdict counts (the last step's, which needs no reply: a peer
            # that sends SMP 4 and leaves at once has finished the exchange).
            final: list[ev.Event] = [
                e
                for e in session.smp_finish(done)
                if isinstance(e, (ev.SMPSucceeded, ev.SMPFailed, ev.SMPAborted))
            ]
            session.data_to_send()
            session.smp_abort()
            session.data_to_send()
            if final:
                self._apply(peer, session, final)
            return
        self._apply(peer, session, session.smp_finish(done))
        self.kick(peer, session)

    async def _executor_for(self, job: SMPJob) -> Executor:
        if self._given is not None:
            return self._given
        try:
            pickle.dumps(job)
        except (pickle.PicklingError, TypeError, AttributeError):
            if self._threads is None:
                self._threads = ThreadPoolExecutor(1, thread_name_prefix="xfer-smp")
            return self._threads
        if self._pool is None:
            self._pool = asyncio.ensure_future(asyncio.to_thread(self._start_pool))
        return await asyncio.shield(self._pool)

    def _start_pool(self) -> Executor:
        """Start the worker (in a thread: starting a process takes a while)
        and wait until it answers."""
        started = time.perf_counter()
        pool = ProcessPoolExecutor(max_workers=1, mp_context=_process_context())
        pool.submit(_ready).result()
        self.spawn_seconds = time.perf_counter() - started
        log.info("SMP worker process started in %.3f s", self.spawn_seconds)
        return pool

    def close(self) -> None:
        """Stop computing; results still under way are thrown away."""
        for _, task in list(self._running.values()):
            task.cancel()
        self._running.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            if pool.done() and not pool.cancelled() and pool.exception() is None:
                pool.result().shutdown(wait=False, cancel_futures=True)
            else:
                pool.add_done_callback(_shutdown_when_started)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


def _shutdown_when_started(pool: asyncio.Future[Executor]) -> None:
    if not pool.cancelled() and pool.exception() is None:
        pool.result().shutdown(wait=False, cancel_futures=True)
