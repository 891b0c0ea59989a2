"""A job's attempt history (schema v12)."""

from __future__ import annotations

from pgqueue import queries, reports
from pgqueue.store._common import Executor


async def list_attempts(db: Executor, job_id: int) -> list[reports.Attempt]:
    """The attempts of job `job_id`, oldest first, its running one (if any) last."""
    records = await db.fetch(queries.LIST_ATTEMPTS, job_id)
    return [reports.Attempt.from_record(r) for r in records]
