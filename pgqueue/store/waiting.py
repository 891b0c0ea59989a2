"""Waiting jobs explained: why each has not started, and when it may be done."""

from __future__ import annotations

from collections.abc import Sequence

from pgqueue import queries, reports
from pgqueue.store._common import Executor

# Queued jobs read per queue to place the asked ones in line: the estimate's bound, so that a
# status poll costs the same at any backlog (one scan of the claim index, stopped here).
LINE_READ_LIMIT = 2_000


async def explain_waits(db: Executor, job_ids: Sequence[int]) -> dict[int, reports.Wait]:
    """Each existing job of `job_ids` explained (see `queries.EXPLAIN_WAITS`), by id."""
    records = await db.fetch(queries.EXPLAIN_WAITS, list(job_ids), LINE_READ_LIMIT)
    return {r["id"]: reports.Wait.from_record(r) for r in records}
