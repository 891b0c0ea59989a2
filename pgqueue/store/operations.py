"""The operator's command line beyond admin.py: listing by payload, bulk retry, purge by age."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgqueue import models, queries, reports
from pgqueue.store._common import Executor, _connection, _jobs
from pgqueue.store.admin import MAX_JOB_ID
from pgqueue.store.bulk import retry_matching
from pgqueue.store.maintenance import PURGE_BATCH


async def list_jobs_matching(
    db: Executor,
    *,
    queue: str | None = None,
    state: models.JobState | None = None,
    kind: str | None = None,
    payload: dict[str, Any] | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[models.Job]:
    """The newest `limit` jobs matching every filter given; `payload`: contained (jsonb `@>`)."""
    records = await db.fetch(
        queries.LIST_JOBS_MATCHING,
        queue,
        None if state is None else state.value,
        kind,
        None if payload is None else json.dumps(payload),
        MAX_JOB_ID if before is None else before,
        limit,
    )
    return _jobs(records)


async def retry_ended_badly(
    db: Executor,
    *,
    queue: str | None = None,
    kind: str | None = None,
    include_cancelled: bool = False,
) -> int:
    """Every failed (and cancelled, if asked) job of the filter back to queued; how many. The
    dashboard's bulk retry, by the same statement, over every job there is."""
    state = None if include_cancelled else models.JobState.FAILED
    found = reports.JobFilter(queue=queue, state=state, kind=kind)
    return await retry_matching(db, found, MAX_JOB_ID)


async def purge_older_than(
    db: Executor, states: Sequence[models.JobState], older_than_s: float
) -> int:
    """Delete jobs in `states` (terminal ones) finished more than `older_than_s` ago, in short
    batches (each its own transaction); returns how many."""
    if not states or any(not state.is_terminal for state in states):
        raise ValueError(f"purge only finished states (succeeded, failed, cancelled): {states}")
    deleted = 0
    async with _connection(db) as conn:
        while True:
            status = await conn.execute(
                queries.PURGE_FINISHED, [s.value for s in states], older_than_s, PURGE_BATCH
            )
            count = int(status.split()[-1])
            deleted += count
            if count < PURGE_BATCH:
                return deleted
