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
from pgqueue.worker.context import JobContext

logger = logging.getLogger("pgqueue.worker")

# Errors after which the same write may succeed on a fresh connection: the server restarted,
# the connection dropped, a deadlock victim. Anything else is a bug and is not retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
WRITE_RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # then every 2 s until the lease ends
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
        lease_s: the lease length, which bounds how long a final write is retried.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: Registry,
        policy: retry.RetryPolicy,
        hooks: events.Hooks,
        lease_s: float,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._policy = policy
        self._hooks = hooks
        self._lease_s = lease_s

    async def run(self, running: RunningJob) -> None:
        """Run one attempt to its end; never raises (outcomes are written, not thrown)."""
        job = running.job
        started = time.monotonic()
        log_extra = {
            "job_id": job.id,
            "kind": job.kind,
            "queue": job.queue,
            "attempt": job.attempts,
        }
        logger.info(
            "job %s started: kind=%s attempt=%d/%d",
            job.id,
            job.kind,
            job.attempts,
            job.max_attempts,
            extra={"action": "job_started", **log_extra},
        )
        await self._hooks.emit(events.Event("active", job.id, job=job))
        try:
            result = await self._call(running)
        except asyncio.CancelledError:
            # Only the worker cancels a handler's task, and it always says why first.
            reason = running.stop_reason or StopReason.SHUTDOWN
            await asyncio.shield(self._stopped(running, reason))
            return
        except Exception as exc:  # the job boundary: every failure becomes an outcome
            duration_s = time.monotonic() - started
            await asyncio.shield(self._failed(running, exc, duration_s, log_extra))
            return
        duration_s = time.monotonic() - started
        await asyncio.shield(self._succeeded(running, result, duration_s, log_extra))

    async def _call(self, running: RunningJob) -> Any:
        job = running.job
        spec = self._registry.get(job.kind)
        if spec is None:
            raise errors.DoNotRetry(f"no handler registered for kind {job.kind!r}")
        deadline = asyncio.timeout(job.timeout_s)
        try:
            async with deadline:
                return await spec.handler(running.context)
        except TimeoutError:
            # Our deadline, or a TimeoutError of the handler's own (an HTTP client's, say).
            if deadline.expired():
                raise _TimedOut(job.timeout_s) from None
            raise

    async def _succeeded(
        self, running: RunningJob, result: Any, duration_s: float, log_extra: dict[str, Any]
    ) -> None:
        job = running.job
        if running.context.completed_in_transaction:
            # The handler completed the job in its own transaction; if that transaction rolled
            # back afterwards, the job is still running under our lease and we complete it here.
            async with self._pool.acquire() as conn:
                current = await conn.fetchrow(queries.GET_JOB, job.id)
            if (
                current is not None
                and current["lease_token"] == running.lease_token
                and (current["state"] == models.JobState.SUCCEEDED.value)
            ):
                self._log_success(job, duration_s, log_extra)
                await self._hooks.emit(
                    events.Event("completed", job.id, job=models.Job.from_record(current))
                )
                return
        try:
            result_json = json.dumps(result)
        except (TypeError, ValueError) as exc:
            await self._failed(
                running, errors.DoNotRetry(f"result is not JSON: {exc}"), duration_s, log_extra
            )
            return
        record = await self._write(
            running,
            queries.COMPLETE_JOB,
            job.id,
            running.lease_token,
            result_json,
            running.context.take_pending_progress(),
        )
        if record is None:
            return
        self._log_success(job, duration_s, log_extra)
        await self._hooks.emit(
            events.Event("completed", job.id, job=models.Job.from_record(record), result=result)
        )

    def _log_success(self, job: models.Job, duration_s: float, log_extra: dict[str, Any]) -> None:
        logger.info(
            "job %s succeeded in %.3fs (attempt %d)",
            job.id,
            duration_s,
            job.attempts,
            extra={"action": "job_succeeded", "duration_s": round(duration_s, 6), **log_extra},
        )

    async def _failed(
        self, running: RunningJob, exc: BaseException, duration_s: float, log_extra: dict[str, Any]
    ) -> None:
        job = running.job
        if isinstance(exc, errors.LeaseLost):
            logger.warning(
                "job %s: lease lost, result dropped",
                job.id,
                extra={"action": "lease_lost", **log_extra},
            )
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
        if record is None:
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
                **log_extra,
            },
        )
        await self._hooks.emit(
            events.Event(
                "failed",
                job.id,
                job=models.Job.from_record(record),
                error=exc,
                will_retry=will_retry,
            )
        )

    async def _stopped(self, running: RunningJob, reason: StopReason) -> None:
        job = running.job
        if reason is StopReason.LEASE_LOST:
            logger.warning(
                "job %s: lease lost, handler cancelled",
                job.id,
                extra={"action": "lease_lost", "job_id": job.id},
            )
            await self._hooks.emit(events.Event("stalled", job.id, job=job, error="lease lost"))
            return
        if reason is StopReason.CANCEL_REQUESTED:
            await self._write(
                running,
                queries.CANCEL_HELD_JOB,
                job.id,
                running.lease_token,
                "cancelled while running",
            )
            logger.info(
                "job %s cancelled", job.id, extra={"action": "job_cancelled", "job_id": job.id}
            )
            return
        await self._write(running, queries.RELEASE_JOBS, [job.id], [running.lease_token])
        logger.info(
            "job %s released at shutdown; its attempt is not spent",
            job.id,
            extra={"action": "job_released", "job_id": job.id},
        )

    async def _write(self, running: RunningJob, query: str, *args: Any) -> asyncpg.Record | None:
        """Run a fenced final write, retrying transient errors while the lease may still hold.

        Returns the row written, or None when the fence refused it (the lease was lost) or the
        database stayed away past the lease, in which case the reaper will hand the job on.
        """
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn:
                    record: asyncpg.Record | None = await conn.fetchrow(query, *args)
                if record is None:
                    logger.warning(
                        "job %s: lease lost before its outcome was written",
                        running.job.id,
                        extra={"action": "lease_lost", "job_id": running.job.id},
                    )
                return record
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() > running.lease_deadline:
                    logger.error(
                        "job %s: could not write its outcome before the lease ended (%s)",
                        running.job.id,
                        exc,
                        extra={"action": "write_abandoned", "job_id": running.job.id},
                    )
                    return None
                delay = WRITE_RETRY_DELAYS_S[min(attempt, len(WRITE_RETRY_DELAYS_S) - 1)]
                attempt += 1
                await asyncio.sleep(delay)


class _TimedOut(Exception):
    def __init__(self, timeout_s: float | None) -> None:
        super().__init__(f"timed out after {timeout_s}s")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.JobError | _TimedOut):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = "".join(traceback.format_exception(exc)).rstrip()
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]
