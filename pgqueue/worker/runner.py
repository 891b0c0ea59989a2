"""One attempt of one job: run the handler, decide the outcome, write it fenced by the lease."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import time
import traceback
from typing import Any

import asyncpg

from pgqueue import errors, models, queries, retry
from pgqueue.registry import Registry
from pgqueue.worker import events
from pgqueue.worker.completer import Completer
from pgqueue.worker.context import JobContext
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s

logger = logging.getLogger("pgqueue.worker")

MAX_ERROR_CHARS = 8000  # last_error keeps the message and the tail of the traceback


class StopReason(enum.Enum):
    """Why the worker cancelled a handler."""

    SHUTDOWN = "shutdown"  # release the job without spending the attempt
    CANCEL_REQUESTED = "cancel_requested"  # someone called Queue.cancel()
    LEASE_LOST = "lease_lost"  # the job is no longer ours: write nothing


@dataclasses.dataclass(slots=True)
class RunningJob:
    """The worker's bookkeeping for one job it holds."""

    job: models.Job
    context: JobContext
    lease_deadline: float  # time.monotonic() by which the lease must have been renewed
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    holds_slot: bool = True  # one of the worker's slots, until the outcome is written
    outcome_written: bool = False  # heartbeats stop renewing from then on

    @property
    def lease_token(self) -> int:
        """The fencing token of this claim."""
        assert self.job.lease_token is not None
        return self.job.lease_token


class JobRunner:
    """Runs handlers and records their outcome.

    Args:
        pool: the worker's pool.
        registry: the handlers.
        policy: backoff for failed attempts.
        hooks: event callbacks.
        completer: the group commit that writes successes.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: Registry,
        policy: retry.RetryPolicy,
        hooks: events.Hooks,
        completer: Completer,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._policy = policy
        self._hooks = hooks
        self._completer = completer

    async def run(self, running: RunningJob) -> None:
        """Run one attempt to its end; never raises (outcomes are written, not thrown)."""
        job = running.job
        started = time.monotonic()
        # Guarded: building the log record's extras costs more than a no-op job's handler.
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "job %s started: kind=%s attempt=%d/%d",
                job.id,
                job.kind,
                job.attempts,
                job.max_attempts,
                extra={"action": "job_started", **_log_extra(job)},
            )
        if self._hooks.wants("active"):
            await self._hooks.emit(events.Event("active", job.id, job=job))
        try:
            result = await self._call(running)
        except asyncio.CancelledError:
            # Only the worker cancels a handler's task, and it always says why first.
            reason = running.stop_reason or StopReason.SHUTDOWN
            await asyncio.shield(self._stopped(running, reason))
            return
        except Exception as exc:  # the job boundary: every failure becomes an outcome
            await asyncio.shield(self._failed(running, exc, time.monotonic() - started))
            return
        # No shield needed (it would cost a task per job): the completer owns the write once
        # it is queued, so a cancellation here cannot stop the job's success being recorded.
        await self._succeeded(running, result, time.monotonic() - started)

    async def _call(self, running: RunningJob) -> Any:
        job = running.job
        spec = self._registry.get(job.kind)
        if spec is None:
            raise errors.DoNotRetry(f"no handler registered for kind {job.kind!r}")
        if job.timeout_s is None:
            return await spec.handler(running.context)
        deadline = asyncio.timeout(job.timeout_s)
        try:
            async with deadline:
                return await spec.handler(running.context)
        except TimeoutError:
            # Our deadline, or a TimeoutError of the handler's own (an HTTP client's, say).
            if deadline.expired():
                raise _TimedOut(job.timeout_s) from None
            raise

    async def _succeeded(self, running: RunningJob, result: Any, duration_s: float) -> None:
        job = running.job
        context = running.context
        if context.completed_in_transaction and await self._completed_by_handler(running):
            written = True
        else:
            try:
                # allow_nan=False: NaN is not JSON, and Postgres would refuse the whole batch.
                result_json = "null" if result is None else json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                error = errors.DoNotRetry(f"the handler's result is not JSON: {exc}")
                await self._failed(running, error, duration_s)
                return
            written = await self._completer.complete(
                job.id,
                running.lease_token,
                result_json,
                context.take_pending_progress(),
                running.lease_deadline,
            )
        running.outcome_written = True
        if not written:
            _log_lease_lost(job)
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "job %s succeeded in %.3fs (attempt %d)",
                job.id,
                duration_s,
                job.attempts,
                extra={
                    "action": "job_succeeded",
                    "duration_s": round(duration_s, 6),
                    **_log_extra(job),
                },
            )
        if self._hooks.wants("completed"):
            done = job._replace(state=models.JobState.SUCCEEDED, result=result)
            await self._hooks.emit(events.Event("completed", job.id, job=done, result=result))

    async def _completed_by_handler(self, running: RunningJob) -> bool:
        # The handler called complete_in(); unless its transaction rolled back afterwards, the
        # job is already succeeded under our token and there is nothing left to write.
        record = await self._write(running, queries.GET_JOB, running.job.id)
        return (
            record is not None
            and record["lease_token"] == running.lease_token
            and record["state"] == models.JobState.SUCCEEDED.value
        )

    async def _failed(self, running: RunningJob, exc: Exception, duration_s: float) -> None:
        job = running.job
        if isinstance(exc, errors.LeaseLost):
            _log_lease_lost(job)
            return
        retryable = not isinstance(exc, errors.DoNotRetry)
        if isinstance(exc, errors.RetryLater):
            delay_s = exc.delay_s
        else:
            delay_s = self._policy.delay_s(job.attempts)
        error_text = _describe(exc)
        record = await self._write(
            running,
            queries.FAIL_ATTEMPT,
            job.id,
            running.lease_token,
            retryable,
            delay_s,
            error_text,
            running.context.take_pending_progress(),
        )
        running.outcome_written = True
        if record is None:
            _log_lease_lost(job)
            return
        will_retry = record["state"] == models.JobState.QUEUED.value
        log = logger.warning if will_retry else logger.error
        log(
            "job %s failed (attempt %d/%d, %s): %s",
            job.id,
            job.attempts,
            job.max_attempts,
            f"retry in {delay_s:.1f}s" if will_retry else "no retry",
            error_text,
            extra={
                "action": "job_failed",
                "duration_s": round(duration_s, 6),
                "will_retry": will_retry,
                "error": error_text,
                **_log_extra(job),
            },
        )
        failed = models.Job.from_record(record)
        await self._hooks.emit(
            events.Event("failed", job.id, job=failed, error=exc, will_retry=will_retry)
        )

    async def _stopped(self, running: RunningJob, reason: StopReason) -> None:
        job = running.job
        if reason is StopReason.LEASE_LOST:
            _log_lease_lost(job)
            await self._hooks.emit(events.Event("stalled", job.id, job=job, error="lease lost"))
        elif reason is StopReason.CANCEL_REQUESTED:
            args = (job.id, running.lease_token, "cancelled while running")
            if await self._write(running, queries.CANCEL_HELD_JOB, *args) is not None:
                logger.info(
                    "job %s cancelled", job.id, extra={"action": "job_cancelled", **_log_extra(job)}
                )
        elif await self._write(running, queries.RELEASE_JOBS, [job.id], [running.lease_token]):
            logger.info(
                "job %s released at shutdown; its attempt is not spent",
                job.id,
                extra={"action": "job_released", **_log_extra(job)},
            )

    async def _write(self, running: RunningJob, query: str, *args: Any) -> asyncpg.Record | None:
        """Run one fenced write, retrying passing outages while the lease may still hold.

        Returns the row, or None when the fence refused the write (the lease was lost), the
        database stayed away past the lease, or the write failed for good; in each case the
        job is (or will be, once its lease expires) in someone else's hands: nothing is lost.
        """
        failures = 0
        while True:
            try:
                async with self._pool.acquire() as conn:
                    record: asyncpg.Record | None = await conn.fetchrow(query, *args)
                return record
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if time.monotonic() > running.lease_deadline:
                    logger.error(
                        "job %s: outcome not written before the lease ended (%s)",
                        running.job.id,
                        exc,
                        extra={"action": "write_abandoned", "job_id": running.job.id},
                    )
                    return None
                await asyncio.sleep(retry_delay_s(failures))
            except Exception:
                logger.exception(
                    "job %s: writing its outcome failed",
                    running.job.id,
                    extra={"action": "write_failed", "job_id": running.job.id},
                )
                return None


class _TimedOut(Exception):
    def __init__(self, timeout_s: float | None) -> None:
        super().__init__(f"timed out after {timeout_s}s")


def _log_extra(job: models.Job) -> dict[str, Any]:
    return {"job_id": job.id, "kind": job.kind, "queue": job.queue, "attempt": job.attempts}


def _log_lease_lost(job: models.Job) -> None:
    logger.warning(
        "job %s: lease lost; its outcome was not written",
        job.id,
        extra={"action": "lease_lost", **_log_extra(job)},
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.JobError | _TimedOut):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = "".join(traceback.format_exception(exc)).rstrip()
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]
