"""Maintenance: the reaper of expired leases, retention purges, vacuum."""

from __future__ import annotations

import json

from pgqueue import models, queries, retry
from pgqueue.store._common import Executor, _connection, _jobs, _milliseconds

REAPER_IDLE_LIMIT_S = 10.0  # a reap takes milliseconds; idle this long, its session is gone
PURGE_BATCH = 1000  # rows per retention DELETE: short transactions, short locks
PURGE_MAX_BATCHES = 100  # batches of one retention pass


async def reap(db: Executor, policy: retry.RetryPolicy, *, batch_size: int) -> list[models.Job]:
    """Move one batch of jobs whose lease expired on: back to queued after their backoff,
    failed once their attempts are spent, cancelled when a cancel was pending.

    Returns the jobs as reaped (empty when another reaper holds the lock). A transaction-scoped
    advisory lock lets one reaper work at a time, and `SKIP LOCKED` keeps even concurrent runs
    disjoint, so every worker may run it.
    """
    async with _connection(db) as conn, conn.transaction():
        # Bounded like a handler's transaction (see lock_held): a reaper cut off while it
        # holds the fleet-wide lock must not keep every other reaper out for hours.
        if not await conn.fetchval(queries.TRY_REAPER_LOCK, _milliseconds(REAPER_IDLE_LIMIT_S)):
            return []
        expired = await conn.fetch(queries.SELECT_EXPIRED_LEASES, batch_size)
        if not expired:
            return []
        # The backoff comes from the pure policy; the database adds it to its own now(). The
        # rows are locked, so nobody changes them in between.
        delays = json.dumps({str(r["id"]): policy.delay_s(max(r["attempts"], 1)) for r in expired})
        records = await conn.fetch(queries.REAP_JOBS, [r["id"] for r in expired], delays)
    return _jobs(records)


async def purge_finished(
    db: Executor,
    *,
    succeeded_older_than_s: float,
    failed_older_than_s: float,
    batch_size: int = PURGE_BATCH,
    max_batches: int = PURGE_MAX_BATCHES,
) -> int:
    """Delete finished jobs in short batches: succeeded and cancelled ones older than
    `succeeded_older_than_s`, failed ones older than `failed_older_than_s`. Each batch is its
    own short transaction; returns how many were deleted."""
    rules = (
        (("succeeded", "cancelled"), succeeded_older_than_s),
        (("failed",), failed_older_than_s),
    )
    deleted = 0
    async with _connection(db) as conn:
        for states, age_s in rules:
            for _ in range(max_batches):
                status = await conn.execute(queries.PURGE_FINISHED, list(states), age_s, batch_size)
                count = int(status.split()[-1])
                deleted += count
                if count < batch_size:
                    break
        await conn.execute(queries.FOLD_FINISHED_COUNTS)
    return deleted


async def purge_idle_concurrency_slots(db: Executor, *, batch_size: int = PURGE_BATCH) -> int:
    """Delete up to `batch_size` concurrency-slot rows that no job needs any more (their count
    is 0 and no live job has their key); returns how many. Safe beside concurrent enqueues and
    claims of those keys: see LOCK_IDLE_CONCURRENCY_SLOTS and schema version 3."""
    async with _connection(db) as conn, conn.transaction():
        keys = [r["key"] for r in await conn.fetch(queries.LOCK_IDLE_CONCURRENCY_SLOTS, batch_size)]
        if not keys:
            return 0
        status = await conn.execute(queries.PURGE_IDLE_CONCURRENCY_SLOTS, keys)
    return int(status.split()[-1])


async def purge_idle_rate_limits(db: Executor, *, batch_size: int = PURGE_BATCH) -> int:
    """Delete up to `batch_size` rate-limit rows that hold no limit, breaker, adaptive rate or
    running throttle (see PURGE_IDLE_RATE_LIMITS); returns how many."""
    status = await db.execute(queries.PURGE_IDLE_RATE_LIMITS, batch_size)
    return int(status.split()[-1])


async def vacuum(db: Executor) -> int | None:
    """VACUUM the queue's tables (outside any transaction; skips tables being vacuumed).

    Returns the dead row versions of pgqueue.jobs the VACUUM had to leave (some snapshot may
    still see them), or None when the server keeps no statistics of it.
    """
    # A role that does not own the tables gets a warning from the server, not an error.
    async with _connection(db) as conn:
        await conn.execute(queries.VACUUM_QUEUE_TABLES)
        left = await conn.fetchval(queries.DEAD_JOBS_LEFT)
    return None if left is None else int(left)
