"""One attempt of one job: run the handler, then decide its outcome (`attempt.decide`), have
the completer write it, and report what was written (`attempt.report`): one count, one log
line, one hook event."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pgqueue import errors, models, retry, store
from pgqueue.registry import Registry
from pgqueue.worker import attempt, events
from pgqueue.worker.completer import Completer
from pgqueue.worker.held import Phase, RunningJob, StopReason
from pgqueue.worker.outcomes import Outcomes

logger = logging.getLogger("pgqueue.worker")


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
        self._logs = logger.isEnabledFor  # bound once: the report asks for every job
        self._wants = hooks.wants

    async def run(self, running: RunningJob) -> None:
        """Run one attempt to its end; never raises (outcomes are written, not thrown)."""
        # One coroutine per job besides the handler's: a no-op job's own cost is mostly frames.
        started = time.monotonic()
        self.outcomes.ran += 1
        try:
            job = running.job
            # Guarded: building the log record's extras costs more than a no-op job's handler.
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "job %s started: kind=%s attempt=%d/%d",
                    job.id,
                    job.kind,
                    job.attempts,
                    job.max_attempts,
                    extra={"action": "job_started", **attempt.log_fields(job)},
                )
            ending: attempt.Ending
            try:
                if self._hooks.wants("active"):
                    await self._hooks.emit(events.Event("active", job.id, job=job))
                spec = self._registry.get(job.kind)
                if spec is not None and job.timeout_s is None:  # the common case, inline
                    ending = attempt.Returned(await spec.handler(running.context))
                else:
                    ending = attempt.Returned(await self._call(running))
            except asyncio.CancelledError:
                # Only the worker cancels a handler's task, and it always says why first.
                ending = attempt.Stopped(running.stop_reason or StopReason.SHUTDOWN)
            except errors.JobCancelled:
                ending = attempt.Stopped(StopReason.CANCEL_REQUESTED)
            except Exception as exc:  # the job boundary: every failure becomes an outcome
                ending = attempt.Raised(exc)
            # Before any await: from here on the heartbeat leaves the job's handler alone, since
            # its outcome is decided (a renewal that crosses the write reads as "lost").
            running.phase = Phase.FINISHING
            duration_s = time.monotonic() - started
            if (
                isinstance(ending, attempt.Returned)
                and running.context.completed_in_transaction
                and await self._completed_by_handler(running)
            ):
                ending = attempt.CompletedInTransaction(running.context.completed_result)
            outcome = attempt.decide(job, ending, self._policy)
            written = await self._completer.finish(running, outcome)
            running.phase = Phase.DONE
            end, line, event = attempt.report(
                job, outcome, written, duration_s, logs=self._logs, wants=self._wants
            )
            self.outcomes.count(end)
            if line is not None:
                logger.log(line.level, line.message, *line.args, extra=line.extra)
            if event is not None:
                await self._hooks.emit(event)
        finally:
            self.outcomes.busy_s += time.monotonic() - started

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
                raise attempt.timed_out(job.timeout_s) from None
            raise

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
