"""`Queue`: enqueue, inspect, cancel and maintain jobs: the application's handle on pgqueue.

A thin facade: it validates arguments and calls `store`, which runs the SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import errors, models, reports, schema, store
from pgqueue.governor import GovernorMethods

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
MAX_SERIES_MINUTES = 60  # the counters keep each minute apart for an hour, then fold them
# What a database without pgqueue's schema (or with an older one) answers an enqueue.
SCHEMA_OBJECT_MISSING = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.InvalidSchemaNameError,
)


class Queue(GovernorMethods):
    """The producer's and inspector's handle on `pgqueue.jobs`.

    Args:
        pool: an asyncpg pool (or a single connection) on a database with pgqueue's schema
            (`python -m pgqueue migrate`, or `pgqueue.schema.upgrade`).
        default_queue: the queue of jobs enqueued without one.
        max_attempts: the attempts of jobs enqueued without `max_attempts`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool | asyncpg.Connection,
        *,
        default_queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if not 1 <= len(default_queue) <= 128:
            raise ValueError("default_queue must be 1-128 characters")
        self._pool = pool
        self.default_queue = default_queue
        self.max_attempts = max_attempts

    async def enqueue(
        self,
        kind: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        rate_limit_key: str | None = None,
        fairness_key: str | None = None,
        fairness_weight: float | None = None,
        cost: float | Decimal | None = None,
        budget_keys: Sequence[str] | None = None,
        notify_finished: bool = False,
        conn: asyncpg.Connection | None = None,
    ) -> models.Job:
        """Enqueue one job; see `models.JobSpec` for the arguments.

        Args:
            conn: run inside this connection's transaction, so the job commits (or rolls back)
                with the caller's own rows. Without it, the job commits at once.

        Returns:
            The new job, or the existing one when `idempotency_key` matched (`is_new` False).
        """
        spec = models.JobSpec(
            kind=kind,
            payload=payload,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            rate_limit_key=rate_limit_key,
            fairness_key=fairness_key,
            fairness_weight=fairness_weight,
            cost=cost,
            budget_keys=budget_keys,
            notify_finished=notify_finished,
        )
        (job,) = await self.enqueue_many([spec], conn=conn)
        return job

    async def enqueue_many(
        self, specs: Sequence[models.JobSpec], *, conn: asyncpg.Connection | None = None
    ) -> list[models.Job]:
        """Enqueue many jobs in one round trip (two when idempotency keys repeat).

        Returns the jobs in the order of `specs`; a spec whose idempotency key already exists
        (in the table, or earlier in `specs`) yields the existing job with `is_new` False. A new
        job's `payload` is the object passed in (the row holds its JSON), not a copy.
        """
        try:
            return await store.enqueue(
                self._db(conn),
                specs,
                default_queue=self.default_queue,
                max_attempts=self.max_attempts,
            )
        except SCHEMA_OBJECT_MISSING as exc:
            raise schema.missing(detail=str(exc)) from exc

    async def get(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """The job with this id, or None."""
        return await store.get_job(self._db(conn), job_id)

    async def get_many(
        self, job_ids: Sequence[int], *, conn: asyncpg.Connection | None = None
    ) -> list[models.Job]:
        """The jobs with these ids that exist, newest (highest id) first."""
        return await store.get_jobs(self._db(conn), job_ids)

    async def cancel(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """Cancel a job: at once when queued; within a heartbeat when running.

        Returns the job as it is after the call, or None when no such job exists. A terminal
        job is returned unchanged. A running job whose handler fails, or whose worker stops,
        before it sees the request ends `cancelled` too: it never runs again.
        """
        return await store.cancel_job(self._db(conn), job_id)

    async def attempts(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> list[reports.Attempt]:
        """The attempts of a job, oldest first (its running one last): who ran each, when, how
        it ended and its error. Empty for a job that never ran or does not exist."""
        return await store.list_attempts(self._db(conn), job_id)

    async def workers(self) -> list[reports.WorkerInfo]:
        """The workers that reported themselves, live ones first, then stale ones (`stale`)."""
        return await store.list_workers(self._db(None))

    async def stats(self) -> dict[str, reports.QueueStats]:
        """Counts per queue, from the `pgqueue.queue_stats` view (cheap at any table size)."""
        return await store.queue_stats(self._pool)

    async def count_waiting(self, queues: Sequence[str]) -> int:
        """Runnable jobs (queued, `run_at` passed) in these queues."""
        return await store.count_waiting(self._pool, queues)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: models.JobState | str | None = None,
        kind: str | None = None,
        limit: int = 50,
        before: int | None = None,
        payload_match: tuple[str, Sequence[str]] | None = None,
    ) -> list[models.Job]:
        """A page of jobs, newest first; see `reports.JobPage` for the filters.

        Pages by id (keyset): pass the last job's id as `before` for the next page, which
        costs the same at any depth and is not shifted by jobs enqueued meanwhile.

        Raises:
            ValueError: a filter is out of range, or `state` names no state.
        """
        page = reports.JobPage(
            queue=queue,
            state=None if state is None else _state(state),
            kind=kind,
            limit=limit,
            before=before,
            payload_match=payload_match,
        )
        return await store.list_jobs(self._pool, page)

    async def retry(self, job_id: int, *, conn: asyncpg.Connection | None = None) -> models.Job:
        """Put a failed or cancelled job back in its queue, runnable now, with a fresh attempt
        budget (`attempts` 0; its `last_error` stays until the next attempt writes one).

        Returns:
            The job, queued.

        Raises:
            JobNotFound: no job has this id.
            JobStateConflict: the job is in another state (`exc.job` says which).
        """
        db = self._db(conn)
        job = await store.retry_job(db, job_id)
        if job is not None:
            return job
        current = await store.get_job(db, job_id)
        if current is None:
            raise errors.JobNotFound(f"no job has id {job_id}")
        raise errors.JobStateConflict(
            f"job {job_id} is {current.state.value}: only failed or cancelled jobs can be retried",
            job=current,
        )

    async def pause(self, queue: str) -> reports.QueueInfo:
        """Pause a queue: from the time this returns, no worker or drain starts its jobs (those
        running finish) until `resume`. Pausing a paused queue changes nothing.

        Returns:
            The queue as it now is.
        """
        await store.pause_queue(self._pool, _queue_name(queue))
        return await self._queue_info(queue)

    async def resume(self, queue: str) -> reports.QueueInfo:
        """Resume a paused queue: its workers are woken and claim its jobs again.

        Returns:
            The queue as it now is.
        """
        await store.resume_queue(self._pool, _queue_name(queue))
        return await self._queue_info(queue)

    async def queues(self) -> list[reports.QueueInfo]:
        """Every queue with jobs, finished-job counts or a pause, by name: its counts, whether
        it is paused, how long its oldest runnable job has waited, and how many jobs finished
        in the last five minutes."""
        return await store.queue_overview(self._pool)

    async def schedules(self) -> list[dict[str, Any]]:
        """The periodic jobs' schedules the workers registered (`Registry.periodic`): `name`,
        `kind`, `queue`, `schedule`, `last_tick`, `next_tick`, `last_job_id`, `updated_at`."""
        return await store.list_schedules(self._pool)

    async def finished_per_minute(
        self, *, queue: str | None = None, minutes: int = 60
    ) -> list[reports.FinishedMinute]:
        """Jobs finished in each of the last `minutes` minutes (1-60), by outcome, oldest first
        and the current minute last; of one queue, or of all when `queue` is None."""
        if not 1 <= minutes <= MAX_SERIES_MINUTES:
            raise ValueError(f"minutes must be 1-{MAX_SERIES_MINUTES}, got {minutes}")
        return await store.finished_per_minute(self._pool, queue, minutes)

    async def _queue_info(self, queue: str) -> reports.QueueInfo:
        for info in await store.queue_overview(self._pool):
            if info.queue == queue:
                return info
        # Resumed, with no job and no counter yet: a queue nothing has used.
        empty = reports.QueueStats(queue, 0, 0, 0, 0, 0, 0)
        return reports.QueueInfo(queue, False, None, empty, None, 0)

    async def purge_finished(
        self,
        *,
        succeeded_older_than: timedelta,
        failed_older_than: timedelta,
        batch_size: int = store.PURGE_BATCH,
        max_batches: int = store.PURGE_MAX_BATCHES,
    ) -> int:
        """Delete old finished jobs in small batches; returns how many were deleted.

        Succeeded and cancelled jobs go after `succeeded_older_than`, failed ones after
        `failed_older_than`. Each batch is its own short transaction.
        """
        return await store.purge_finished(
            self._pool,
            succeeded_older_than_s=succeeded_older_than.total_seconds(),
            failed_older_than_s=failed_older_than.total_seconds(),
            batch_size=batch_size,
            max_batches=max_batches,
        )

    def _db(self, conn: asyncpg.Connection | None) -> store.Executor:
        return conn if conn is not None else self._pool

    async def explain_waits(
        self, job_ids: Sequence[int], *, conn: asyncpg.Connection | None = None
    ) -> dict[int, reports.Wait]:
        """Why each of these jobs waits, when its next attempt may start and when it may be done.

        One statement, whatever the number of jobs: a queued job's `reason` is the first of
        `queue_paused`, `retry_scheduled`, `queued` (delayed: `next_attempt_at` is its run_at),
        `upstream_down`, `rate_limit`, `over_budget`, `concurrency` that holds, else `queued`;
        a running or finished job has none. `done_in_s` estimates when it is done from its
        place in its queue's line and the queue's recent throughput (`queries.EXPLAIN_WAITS`
        gives the formula). Cheap at any backlog: at most `store.LINE_READ_LIMIT` queued jobs
        of each queue are read.

        Args:
            job_ids: the jobs to explain (ids with no job are left out of the answer).
            conn: read inside this connection's transaction.

        Returns:
            A `reports.Wait` per existing job, by id.
        """
        return await store.explain_waits(self._db(conn), job_ids)


def _state(value: models.JobState | str) -> models.JobState:
    try:
        return models.JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in models.JobState)
        raise ValueError(f"state must be one of {names}; got {value!r}") from None


def _queue_name(queue: str) -> str:
    if not 1 <= len(queue) <= 128:
        raise ValueError("a queue name is 1-128 characters")
    return queue
