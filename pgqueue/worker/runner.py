"""One attempt of one job: run the handler, decide the outcome, hand it to the completer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from typing import Any

from pgqueue import errors, models, retry, store
from pgqueue.registry import Registry
from pgqueue.worker import events
from pgqueue.worker.completer import Completer
from pgqueue.worker.held import Phase, RunningJob, StopReason
from pgqueue.worker.outcomes import Outcomes

logger = logging.getLogger("pgqueue.worker")

MAX_ERROR_CHARS = 8000  # last_error keeps the message and the tail of the traceback


class JobRunner:
    """Runs handlers and hands their outcome to the completer.

    Args:
        db: the worker's own pool (to read back a job a handler completed itself).
        registry: the handlers.
        policy: backoff for failed attempts.
        hooks: event callbacks.
        completer: writes every outcome.
        outcomes: counted into, as outcomes are written.
    """

    def __init__(
        self,
        db: store.Executor,
        registry: Registry,
        policy: retry.RetryPolicy,
        hooks: events.Hooks,
        completer: Completer,
        outcomes: Outcomes | None = None,
    ) -> None:
        self.outcomes = outcomes or Outcomes()
        self._db = db
        self._registry = registry
        self._policy = policy
        self._hooks = hooks
        self._completer = completer

    async def run(self, running: RunningJob) -> None:
        """Run one attempt to its end; never raises (outcomes are written, not thrown)."""
        started = time.monotonic()
        self.outcomes.ran += 1
        try:
            await self._run(running, started)
        finally:
            self.outcomes.busy_s += time.monotonic() - started

    async def _run(self, running: RunningJob, started: float) -> None:
        job = running.job
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
        try:
            if self._hooks.wants("active"):
                await self._hooks.emit(events.Event("active", job.id, job=job))
            result = await self._call(running)
        except asyncio.CancelledError:
            # Only the worker cancels a handler's task, and it always says why first.
            running.phase = Phase.FINISHING
            reason = running.stop_reason or StopReason.SHUTDOWN
            await self._stopped(running, reason)
            return
        except errors.JobCancelled:
            running.phase = Phase.FINISHING
            await self._stopped(running, StopReason.CANCEL_REQUESTED)
            return
        except Exception as exc:  # the job boundary: every failure becomes an outcome
            running.phase = Phase.FINISHING
            await self._failed(running, exc, time.monotonic() - started)
            return
        running.phase = Phase.FINISHING
        await self._succeeded(running, result, time.monotonic() - started)

    async def _call(self, running: RunningJob) -> Any:
        job = running.job
        spec = self._registry.get(job.kind)
        if spec is None:  # the claim takes only known kinds; a registry changed at run time
            raise errors.RetryLater(f"no handler registered for kind {job.kind!r}", delay_s=60)
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
            result = context.completed_result
            self._completer.release()
        else:
            try:
                # allow_nan=False: NaN is not JSON, and Postgres would refuse the whole batch.
                result_json = "null" if result is None else json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                error = errors.DoNotRetry(f"the handler's result is not JSON: {exc}")
                await self._failed(running, error, duration_s)
                return
            success = store.Success(
                job.id, running.lease_token, result_json, context.take_pending_progress()
            )
            # Not shielded (it would cost a task per job): the completer owns the write once
            # it is queued, so cancelling this task cannot stop the success being recorded.
            written = await self._completer.succeed(success, running.lease_deadline)
        running.phase = Phase.DONE
        if not written:
            self.outcomes.lost += 1
            _log_lease_lost(job)
            return
        self.outcomes.succeeded += 1
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
        try:
            current = await store.get_job(self._db, running.job.id)
        except Exception:  # unknown: write the success the usual way (it is fenced)
            logger.warning("job %s: could not read it back", running.job.id, exc_info=True)
            return False
        return (
            current is not None
            and current.lease_token == running.lease_token
            and current.state is models.JobState.SUCCEEDED
        )

    async def _failed(self, running: RunningJob, exc: Exception, duration_s: float) -> None:
        job = running.job
        if isinstance(exc, errors.LeaseLost):
            running.phase = Phase.DONE
            self.outcomes.lost += 1
            self._completer.release()
            _log_lease_lost(job)
            return
        retryable = not isinstance(exc, errors.DoNotRetry)
        if isinstance(exc, errors.RetryLater):
            delay_s = exc.delay_s
        else:
            delay_s = self._policy.delay_s(job.attempts)
        # Both are at most a year already (RetryLater and RetryPolicy cap them); the store
        # makes sure of it where the value meets the database.
        error_text = _describe(exc)
        progress_json = running.context.take_pending_progress()

        throttle_s = exc.throttle_s if isinstance(exc, errors.RetryLater) else None
        throttled = throttle_s is not None and job.rate_limit_key is not None

        async def write(db: store.Executor) -> models.Job | None:
            if throttle_s is not None and job.rate_limit_key is not None:
                # The upstream is busy, not the job at fault: pause the whole key and give
                # the attempt back (bounded by time, not attempts).
                return await store.throttle(
                    db,
                    job.id,
                    running.lease_token,
                    job.rate_limit_key,
                    pause_s=throttle_s,
                    delay_s=delay_s,
                    error=error_text,
                    progress_json=progress_json,
                )
            return await store.fail_attempt(
                db,
                job.id,
                running.lease_token,
                retryable=retryable,
                delay_s=delay_s,
                error=error_text,
                progress_json=progress_json,
            )

        failed = await self._completer.write(job.id, running.lease_deadline, write)
        running.phase = Phase.DONE
        if failed is None:
            self.outcomes.lost += 1
            _log_lease_lost(job)
            return
        if failed.state is models.JobState.CANCELLED:
            self.outcomes.failed += 1
            logger.info(
                "job %s cancelled (it failed after a cancel was requested)",
                job.id,
                extra={"action": "job_cancelled", **_log_extra(job)},
            )
            await self._emit_cancelled(failed)
            return
        will_retry = failed.state is models.JobState.QUEUED
        if will_retry:
            self.outcomes.retried += 1
        else:
            self.outcomes.failed += 1
        if throttled and will_retry:
            log, action = logger.warning, "job_throttled"
            message = "job %s throttled: key %s paused for %.1fs, attempt not spent: %s"
            args: tuple[Any, ...] = (job.id, job.rate_limit_key, throttle_s, error_text)
        else:
            log = logger.warning if will_retry else logger.error
            action = "job_failed"
            message = "job %s failed (attempt %d/%d, %s): %s"
            retry = f"retry in {delay_s:.1f}s" if will_retry else "no retry"
            args = (job.id, job.attempts, job.max_attempts, retry, error_text)
        log(
            message,
            *args,
            extra={
                "action": action,
                "duration_s": round(duration_s, 6),
                "will_retry": will_retry,
                "error": error_text,
                **_log_extra(job),
            },
        )
        await self._hooks.emit(
            events.Event("failed", job.id, job=failed, error=exc, will_retry=will_retry)
        )

    async def _stopped(self, running: RunningJob, reason: StopReason) -> None:
        job = running.job
        token = running.lease_token
        if reason is StopReason.LEASE_LOST:
            running.phase = Phase.DONE
            self.outcomes.lost += 1
            self._completer.release()
            _log_lease_lost(job)
            await self._hooks.emit(events.Event("stalled", job.id, job=job, error="lease lost"))
            return
        if reason is StopReason.CANCEL_REQUESTED:

            async def cancel(db: store.Executor) -> models.Job | None:
                return await store.cancel_held(db, job.id, token, "cancelled while running")

            cancelled = await self._completer.write(job.id, running.lease_deadline, cancel)
            running.phase = Phase.DONE
            if cancelled is None:
                self.outcomes.lost += 1
            else:
                self.outcomes.failed += 1
                logger.info(
                    "job %s cancelled", job.id, extra={"action": "job_cancelled", **_log_extra(job)}
                )
                await self._emit_cancelled(cancelled)
            return

        async def release(db: store.Executor) -> dict[int, models.JobState]:
            return await store.release(db, [store.HeldLease(job.id, token)])

        released = await self._completer.write(job.id, running.lease_deadline, release)
        running.phase = Phase.DONE
        state = (released or {}).get(job.id)
        if state is None:
            self.outcomes.lost += 1
        elif state is models.JobState.CANCELLED:
            self.outcomes.failed += 1
        else:
            self.outcomes.released += 1
        if state is models.JobState.QUEUED:
            logger.info(
                "job %s released at shutdown; its attempt is not spent",
                job.id,
                extra={"action": "job_released", **_log_extra(job)},
            )
        elif state is models.JobState.CANCELLED:
            logger.info(
                "job %s cancelled at shutdown (a cancel was requested)",
                job.id,
                extra={"action": "job_cancelled", **_log_extra(job)},
            )
            ended = job._replace(
                state=models.JobState.CANCELLED, last_error="cancelled while running"
            )
            await self._emit_cancelled(ended)

    async def _emit_cancelled(self, job: models.Job) -> None:
        # A cancel ended the job for good: the `failed` hooks hear of it, as of any final end.
        await self._hooks.emit(
            events.Event("failed", job.id, job=job, error=errors.JobCancelled(), will_retry=False)
        )


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
