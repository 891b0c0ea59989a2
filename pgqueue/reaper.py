"""The reaper: running jobs whose lease expired are requeued with backoff, or failed.

Every worker runs it; a transaction-scoped advisory lock lets one of them work at a time and
`FOR UPDATE SKIP LOCKED` keeps even concurrent runs disjoint, so running it everywhere is safe.
A job's lost attempt counts: a job that kills its worker every time is failed once its
attempts are spent, instead of crashing workers for ever.
"""

from __future__ import annotations

import dataclasses
import logging

import asyncpg

from pgqueue import models, queries, retry

logger = logging.getLogger(__name__)

REAP_BATCH = 500  # expired leases handled per transaction


@dataclasses.dataclass(frozen=True, slots=True)
class ReapedJob:
    """A job whose lease expired, and the state the reaper moved it to."""

    id: int
    queue: str
    kind: str
    state: models.JobState
    attempts: int
    max_attempts: int


class Reaper:
    """Finds expired leases and moves their jobs on, in batches.

    Args:
        policy: the backoff for requeued jobs.
        batch_size: most jobs handled per transaction.
    """

    def __init__(self, policy: retry.RetryPolicy, *, batch_size: int = REAP_BATCH) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.policy = policy
        self.batch_size = batch_size

    async def run_once(self, conn: asyncpg.Connection) -> list[ReapedJob]:
        """Reap one batch; returns the jobs moved (empty when another reaper holds the lock)."""
        async with conn.transaction():
            if not await conn.fetchval(queries.TRY_REAPER_LOCK):
                return []
            expired = await conn.fetch(queries.SELECT_EXPIRED_LEASES, self.batch_size)
            if not expired:
                return []
            # The backoff is computed here, from the pure policy; the database adds it to its
            # own now(). The rows are locked, so nobody changes them in between.
            ids = [r["id"] for r in expired]
            delays = queries.keyed_fields(
                (r["id"], repr(float(self.policy.delay_s(max(r["attempts"], 1))))) for r in expired
            )
            records = await conn.fetch(queries.REAP_JOBS, ids, delays)
        reaped = [
            ReapedJob(
                id=r["id"],
                queue=r["queue"],
                kind=r["kind"],
                state=models.JobState(r["state"]),
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
            )
            for r in records
        ]
        if reaped:
            logger.warning(
                "reaped %d job(s) with expired leases",
                len(reaped),
                extra={"action": "jobs_reaped", "job_ids": [job.id for job in reaped]},
            )
        return reaped
