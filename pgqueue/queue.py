"""`Queue`: enqueue, inspect, cancel and maintain jobs: the application's handle on pgqueue.

A thin facade: it validates arguments and calls `store`, which runs the SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from pgqueue import models, store

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3


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
        return await store.enqueue(
            self._db(conn), specs, default_queue=self.default_queue, max_attempts=self.max_attempts
        )

    async def get(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """The job with this id, or None."""
        return await store.get_job(self._db(conn), job_id)

    async def cancel(
        self, job_id: int, *, conn: asyncpg.Connection | None = None
    ) -> models.Job | None:
        """Cancel a job: at once when queued; within a heartbeat when running.

        Returns the job as it is after the call, or None when no such job exists. A terminal
        job is returned unchanged. A running job whose handler fails, or whose worker stops,
        before it sees the request ends `cancelled` too: it never runs again.
        """
        return await store.cancel_job(self._db(conn), job_id)

    async def stats(self) -> dict[str, models.QueueStats]:
        """Counts per queue, from the `pgqueue.queue_stats` view (cheap at any table size)."""
        return await store.queue_stats(self._pool)

    async def count_waiting(self, queues: Sequence[str]) -> int:
        """Runnable jobs (queued, `run_at` passed) in these queues."""
        return await store.count_waiting(self._pool, queues)

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
