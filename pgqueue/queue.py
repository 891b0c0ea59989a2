"""`Queue`: enqueue, inspect, cancel and maintain jobs. Used by applications and by workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from pgqueue import models, queries

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
PURGE_BATCH = 1000  # rows per retention DELETE: short transactions, short locks


class Queue:
    """The producer's and inspector's handle on `pgqueue.jobs`.

    Args:
        pool: an asyncpg pool (or a single connection) on a database migrated by alembic.
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
        if not specs:
            return []
        keys = [spec.idempotency_key for spec in specs if spec.idempotency_key is not None]
        if conn is not None:
            return await self._enqueue(conn, specs, keys)
        async with self._acquire() as own:
            if not keys:
                return await self._enqueue(own, specs, keys)
            async with own.transaction():
                return await self._enqueue(own, specs, keys)

    async def _enqueue(
        self,
        conn: asyncpg.Connection,
        specs: Sequence[models.JobSpec],
        keys: list[str],
    ) -> list[models.Job]:
        # The statement returns only what the database decides (id, run_at, created_at); the
        # rest of each new job is what was sent. Reading whole rows back cost a quarter of a
        # batch's time (23 columns decoded, payloads parsed again).
        rows = await conn.fetch(
            queries.ENQUEUE_JOBS, _encode(specs), self.default_queue, self.max_attempts
        )
        # Rows without a key were inserted in input order, so their ids ascend with it; a
        # keyed row was inserted from the first spec carrying its key.
        unkeyed = iter(sorted((r for r in rows if r["idempotency_key"] is None), key=_row_id))
        inserted = {r["idempotency_key"]: r for r in rows if r["idempotency_key"] is not None}
        existing: dict[str, models.Job] = {}
        missing = [key for key in keys if key not in inserted]
        if missing:
            # Same transaction, new snapshot: a concurrent enqueue of the same key has committed
            # by now (the unique index made our INSERT wait for it), so its row is visible.
            for record in await conn.fetch(queries.SELECT_JOBS_BY_IDEMPOTENCY_KEY, missing):
                existing[record["idempotency_key"]] = models.Job.from_record(record, is_new=False)
        jobs: list[models.Job] = []
        first_of_key: dict[str, models.Job] = {}
        for spec in specs:
            key = spec.idempotency_key
            if key is None:
                jobs.append(self._new_job(next(unkeyed), spec))
            elif key in first_of_key:  # a repeat of a key earlier in this batch
                jobs.append(first_of_key[key]._replace(is_new=False))
            else:
                row = inserted.get(key)
                job = self._new_job(row, spec) if row is not None else existing[key]
                first_of_key[key] = job
                jobs.append(job)
        return jobs

    def _new_job(self, row: asyncpg.Record, spec: models.JobSpec) -> models.Job:
        """The job just inserted from `spec`, with the database's id and times.

        Its payload is the object that was passed (not a copy read back from the database).
        """
        return models.Job(
            id=row["id"],
            queue=spec.queue or self.default_queue,
            kind=spec.kind,
            payload=spec.payload if spec.payload is not None else {},
            state=models.JobState.QUEUED,
            priority=spec.priority,
            attempts=0,
            max_attempts=spec.max_attempts or self.max_attempts,
            run_at=row["run_at"],
            lease_expires_at=None,
            lease_token=None,
            worker_id=None,
            last_error=None,
            progress=None,
            result=None,
            idempotency_key=spec.idempotency_key,
            concurrency_key=spec.concurrency_key,
            concurrency_limit=spec.concurrency_limit,
            timeout_s=spec.timeout.total_seconds() if spec.timeout else None,
            cancel_requested_at=None,
            created_at=row["created_at"],
            started_at=None,
            finished_at=None,
        )

    async def get(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """The job with this id, or None."""
        async with self._acquire(conn) as c:
            record = await c.fetchrow(queries.GET_JOB, job_id)
        return models.Job.from_record(record) if record else None

    async def cancel(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """Cancel a job: at once when queued; within a heartbeat when running.

        Returns the job as it is after the call, or None when no such job exists. A terminal
        job is returned unchanged.
        """
        async with self._acquire(conn) as c:
            record = await c.fetchrow(queries.CANCEL_JOB, job_id)
            if record is None:
                record = await c.fetchrow(queries.GET_JOB, job_id)
        return models.Job.from_record(record) if record else None

    async def stats(self) -> dict[str, models.QueueStats]:
        """Counts per queue, from the `pgqueue.queue_stats` view (cheap at any table size)."""
        async with self._acquire() as c:
            records = await c.fetch(queries.QUEUE_STATS)
        return {r["queue"]: models.QueueStats.from_record(r) for r in records}

    async def count_waiting(self, queues: Sequence[str]) -> int:
        """Runnable jobs (queued, `run_at` passed) in these queues."""
        async with self._acquire() as c:
            count: int = await c.fetchval(queries.COUNT_WAITING, list(queues))
        return count

    async def purge_finished(
        self,
        *,
        succeeded_older_than: timedelta,
        failed_older_than: timedelta,
        batch_size: int = PURGE_BATCH,
        max_batches: int = 100,
    ) -> int:
        """Delete old finished jobs in small batches; returns how many were deleted.

        Succeeded and cancelled jobs go after `succeeded_older_than`, failed ones after
        `failed_older_than`. Each batch is its own short transaction.
        """
        rules = [
            (["succeeded", "cancelled"], succeeded_older_than.total_seconds()),
            (["failed"], failed_older_than.total_seconds()),
        ]
        deleted = 0
        async with self._acquire() as c:
            for states, age_s in rules:
                for _ in range(max_batches):
                    status = await c.execute(queries.PURGE_FINISHED, states, age_s, batch_size)
                    count = int(status.split()[-1])
                    deleted += count
                    if count < batch_size:
                        break
            await c.execute(queries.FOLD_FINISHED_COUNTS)
        return deleted

    def _acquire(self, conn: asyncpg.Connection | None = None) -> Any:
        if conn is not None:
            return _Borrowed(conn)
        if isinstance(self._pool, asyncpg.Connection):
            return _Borrowed(self._pool)
        return self._pool.acquire()


class _Borrowed:
    """An async context manager that lends a connection the caller owns."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        return None


def _row_id(row: asyncpg.Record) -> int:
    return int(row["id"])


def _encode(specs: Sequence[models.JobSpec]) -> str:
    """ENQUEUE_JOBS' first parameter: one JSON object per spec, defaults left out."""
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"kind": spec.kind}
        if spec.payload is not None:
            row["payload"] = spec.payload
        if spec.queue is not None:
            row["queue"] = spec.queue
        if spec.priority:
            row["priority"] = spec.priority
        if spec.run_at is not None:
            row["run_at"] = spec.run_at.isoformat()
        if spec.delay:
            row["delay_s"] = spec.delay.total_seconds()
        if spec.max_attempts is not None:
            row["max_attempts"] = spec.max_attempts
        if spec.timeout is not None:
            row["timeout_s"] = spec.timeout.total_seconds()
        if spec.idempotency_key is not None:
            row["idempotency_key"] = spec.idempotency_key
        if spec.concurrency_key is not None:
            row["concurrency_key"] = spec.concurrency_key
            row["concurrency_limit"] = spec.concurrency_limit
        rows.append(row)
    return json.dumps(rows)
