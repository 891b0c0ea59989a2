"""`Completer`: writes every job outcome, fenced by its lease, and hands each slot back.

Every outcome comes in through one call, `finish(running, outcome)`. Successes are
group-committed: every success that arrives while the last write is in flight
is written by the next single statement. At low load that is a batch of one; under load one
statement completes hundreds of jobs, which is what lets one worker process run tens of
thousands of short jobs a second. While the worker is not stopping, that statement also claims
the jobs that take the freed slots (`store.complete_and_claim` through `Producer.handoff`):
measured, complete-then-claim in two round trips ran 1.5-2x fewer no-op jobs a second.

A big worker (128 slots or more) keeps a few such statements in flight at once, each with its
share of the slots: while Postgres runs one, Python starts and finishes the jobs another one
claimed, instead of the two taking turns (measured with 500 slots: 13k jobs/s with one in
flight, 19-25k with two). A smaller one keeps one, whose batches are twice as big.

Failures, throttles, cancellations and releases are rare and written one by one, each by a task
of the completer's own, retried through passing outages while the lease may still hold; an
outcome with nothing to write (a lost lease, a success the handler's own transaction wrote)
only frees its slot. Either way the job's slot goes back to the producer exactly once, when its
outcome is written or given up; `flush` lets a stopping worker wait for all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias, assert_never

from pgqueue import models, store
from pgqueue.worker import attempt
from pgqueue.worker.held import RunningJob
from pgqueue.worker.producer import Producer
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s
from pgqueue.worker.waiting import wait_any

logger = logging.getLogger("pgqueue.worker")

# One outcome's fenced statement, run (and retried through passing outages) by the completer.
_Statement: TypeAlias = Callable[[store.Executor], Awaitable[attempt.Written]]

MAX_BATCH = 2000  # completions per statement
# A smaller worker gains nothing from more statements per job: a complete-and-claim statement
# has a large fixed cost in Postgres, and two of them in flight each carry half the jobs
# (measured, 50 slots, 20k no-ops, six interleaved runs on a loaded 2-core machine: one in
# flight used 36% less backend CPU, 1.1-1.2 s against 1.8-2.8 s, and drained faster in five
# of six runs, median 5.3k against 4.6k jobs/s).
PIPELINE_FROM_CONCURRENCY = 128
MAX_IN_FLIGHT = 2  # statements at once for a worker at least that big


def pipeline_for(concurrency: int) -> tuple[int, int]:
    """(statements in flight, completions per statement) for a worker of `concurrency`."""
    if concurrency < PIPELINE_FROM_CONCURRENCY:
        return 1, MAX_BATCH
    return MAX_IN_FLIGHT, min(MAX_BATCH, -(-concurrency // MAX_IN_FLIGHT))


@dataclasses.dataclass(slots=True)
class _Pending:
    success: store.Success
    lease_deadline: float  # time.monotonic(); past it the write is abandoned to the reaper
    future: asyncio.Future[attempt.Written]  # the job's state once written, or None


class Completer:
    """Writes outcomes; run `run()` as a supervised task.

    Args:
        db: the worker's own pool.
        producer: where freed slots go back (and the hand-off's claims come from).
        max_batch: most successes per statement.
        max_in_flight: most success statements running at once (each on its own connection).
    """

    def __init__(
        self,
        db: store.Executor,
        producer: Producer,
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = 1,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self._db = db
        self._producer = producer
        self._max_batch = max_batch
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._pending: list[_Pending] = []
        self._writing: set[asyncio.Task[None]] = set()  # success statements in flight
        self._single: set[asyncio.Task[attempt.Written]] = set()  # one-by-one writes in flight
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def busy(self) -> bool:
        """Whether any outcome is waiting to be written or being written."""
        return bool(self._pending or self._writing or self._single)

    def finish(
        self, running: RunningJob, outcome: attempt.Outcome
    ) -> asyncio.Future[attempt.Written]:
        """Write the outcome of `running`'s attempt, fenced by its lease, and free its slot.

        Await the future returned: it says what was written (`attempt.Written`), or None when
        nothing was: the lease was lost, the database stayed away past the lease, or the
        completer stopped first; the job is then (or will be, once its lease expires) in the
        reaper's hands, so nothing is lost. Cancelling the waiter cannot stop the write.
        """
        # A plain function handing out the future, not a coroutine awaiting it: one more
        # coroutine per success costs a busy worker a frame, a send and a conversion per job.
        # isinstance, not match: see attempt.py.
        job = running.job
        if isinstance(outcome, attempt.Succeeded):
            if outcome.result_json is None:  # the handler's own transaction wrote it
                self._producer.release(1)
                return _done(models.JobState.SUCCEEDED)
            if self._closed:
                self._producer.release(1)
                return _done(None)
            # Into the next batch. Not shielded (it would cost a task per job): the completer
            # owns the write once it is queued, so cancelling the waiter cannot stop it.
            progress_json = running.context.take_pending_progress()
            success = store.Success(job.id, running.lease_token, outcome.result_json, progress_json)
            future: asyncio.Future[attempt.Written] = asyncio.get_running_loop().create_future()
            self._pending.append(_Pending(success, running.lease_deadline, future))
            self._idle.clear()
            self._ready.set()
            return future
        if isinstance(outcome, attempt.LeaseLost):
            self._producer.release(1)
            return _done(None)
        statement = _statement(running, outcome)
        return self._write_single(job.id, running.lease_deadline, statement)

    def _write_single(
        self, job_id: int, lease_deadline: float, statement: _Statement
    ) -> asyncio.Future[attempt.Written]:
        # In a task of the completer's own, shielded, so that cancelling the waiter cannot
        # stop it.
        if self._closed:
            self._producer.release(1)
            return _done(None)
        task = asyncio.create_task(
            self._write_one(job_id, lease_deadline, statement), name=f"pgqueue-write-{job_id}"
        )
        self._single.add(task)
        self._idle.clear()
        task.add_done_callback(self._single_done)
        return asyncio.shield(task)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every outcome handed in so far is written; False if `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while self.busy:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._idle.clear()
            await wait_any(self._idle, timeout=left)
        return True

    async def run(self) -> None:
        """Write successes as they come, until cancelled."""
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                if self._failure is not None:
                    raise self._failure  # a bug: the supervisor stops the worker
                while self._pending:
                    await self._in_flight.acquire()
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    task = asyncio.create_task(self._write_batch(batch))
                    self._writing.add(task)
                    task.add_done_callback(self._batch_done)
        finally:
            # Stopped (after the worker's flush, or by a bug): whoever still waits learns that
            # nothing was written, and the reaper takes over.
            self._closed = True
            for running in (*self._writing, *self._single):
                running.cancel()
            await asyncio.gather(*self._writing, *self._single, return_exceptions=True)
            self._abandon(self._pending)
            self._pending.clear()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        self._in_flight.release()
        self._note_idle()

    def _single_done(self, task: asyncio.Task[attempt.Written]) -> None:
        self._single.discard(task)
        self._note_idle()

    def _note_idle(self) -> None:
        if not self.busy:
            self._idle.set()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._write_successes(batch)
        except asyncio.CancelledError:
            self._abandon(batch)
            raise
        except Exception as exc:  # not the database's: a bug; stop the worker loudly
            self._abandon(batch)
            logger.exception("completer failed", extra={"action": "completer_failed"})
            self._failure = exc
            self._ready.set()

    async def _write_successes(self, batch: list[_Pending]) -> None:
        failures = 0
        while batch:
            handoff = self._producer.handoff(len(batch))
            successes = [p.success for p in batch]
            try:
                if handoff is None:
                    written = await store.complete(self._db, successes)
                    claimed: list[models.Job] = []
                else:
                    written, claimed = await store.complete_and_claim(
                        self._db, successes, handoff.request
                    )
            except TRANSIENT_ERRORS as exc:
                if handoff is not None:
                    self._producer.failed(handoff)
                failures += 1
                now = time.monotonic()
                self._abandon([p for p in batch if now > p.lease_deadline])
                batch = [p for p in batch if now <= p.lease_deadline]
                logger.warning(
                    "completing %d job(s) failed (%s); retrying",
                    len(batch),
                    exc,
                    extra={"action": "complete_retry"},
                )
                await asyncio.sleep(retry_delay_s(failures))
                continue
            except BaseException:
                if handoff is not None:
                    self._producer.failed(handoff)
                raise
            if handoff is None:
                self._producer.release(len(batch))
            else:
                self._producer.delivered(handoff, claimed)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(
                        models.JobState.SUCCEEDED if pending.success.job_id in written else None
                    )
            return

    def _abandon(self, batch: list[_Pending]) -> None:
        """Give up these successes: their waiters learn None, their slots come back."""
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(None)
        if batch:
            self._producer.release(len(batch))

    async def _write_one(
        self, job_id: int, lease_deadline: float, statement: _Statement
    ) -> attempt.Written:
        try:
            failures = 0
            while True:
                try:
                    return await statement(self._db)
                except TRANSIENT_ERRORS as exc:
                    failures += 1
                    if time.monotonic() > lease_deadline:
                        logger.error(
                            "job %s: outcome not written before the lease ended (%s)",
                            job_id,
                            exc,
                            extra={"action": "write_abandoned", "job_id": job_id},
                        )
                        return None
                    await asyncio.sleep(retry_delay_s(failures))
                except Exception:
                    logger.exception(
                        "job %s: writing its outcome failed",
                        job_id,
                        extra={"action": "write_failed", "job_id": job_id},
                    )
                    return None
        finally:
            self._producer.release(1)


def _done(written: attempt.Written) -> asyncio.Future[attempt.Written]:
    """A future that already says what was written."""
    future: asyncio.Future[attempt.Written] = asyncio.get_running_loop().create_future()
    future.set_result(written)
    return future


def _statement(
    running: RunningJob,
    outcome: attempt.Failed
    | attempt.Throttled
    | attempt.UpstreamFailed
    | attempt.Cancelled
    | attempt.Released,
) -> _Statement:
    """The fenced write of an outcome that is not a success (those are batched)."""
    job_id, token = running.job.id, running.lease_token
    if isinstance(outcome, attempt.Failed):
        progress_json = running.context.take_pending_progress()
        return lambda db: store.fail_attempt(
            db,
            job_id,
            token,
            retryable=outcome.retryable,
            delay_s=outcome.delay_s,
            error=outcome.error_text,
            progress_json=progress_json,
        )
    if isinstance(outcome, attempt.Throttled):
        progress_json = running.context.take_pending_progress()
        return lambda db: store.throttle(
            db,
            job_id,
            token,
            outcome.rate_limit_key,
            pause_s=outcome.pause_s,
            delay_s=outcome.delay_s,
            error=outcome.error_text,
            progress_json=progress_json,
        )
    if isinstance(outcome, attempt.UpstreamFailed):
        progress_json = running.context.take_pending_progress()

        async def fail_upstream(db: store.Executor) -> models.Job | None:
            written, _ = await store.fail_upstream(
                db,
                job_id,
                token,
                outcome.rate_limit_key,
                delay_s=outcome.delay_s,
                error=outcome.error_text,
                progress_json=progress_json,
            )
            return written

        return fail_upstream
    if isinstance(outcome, attempt.Cancelled):
        return lambda db: store.cancel_held(db, job_id, token, attempt.CANCELLED_ERROR)
    if isinstance(outcome, attempt.Released):

        async def release(db: store.Executor) -> models.JobState | None:
            states = await store.release(db, [store.HeldLease(job_id, token)])
            return states.get(job_id)

        return release
    assert_never(outcome)
