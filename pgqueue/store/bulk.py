"""Every job of a filter at once: a bounded payload search, the count a bulk action would
change, bulk retry and bulk cancel (see `queries.bulk`)."""

from __future__ import annotations

import json
from typing import Any

from pgqueue import models, queries, reports
from pgqueue.store._common import Executor, _connection, _jobs

SEARCH_WINDOW_IDS = 100_000  # job ids one page of a payload search reads at most
RETRYABLE = (models.JobState.FAILED, models.JobState.CANCELLED)
CANCELLABLE = (models.JobState.QUEUED, models.JobState.RUNNING)


def _parameters(found: reports.JobFilter, states: list[str]) -> tuple[Any, ...]:
    payload = None if found.payload is None else json.dumps(found.payload)
    return (found.queue, states, found.kind, payload)


async def list_jobs_containing(
    db: Executor,
    found: reports.JobFilter,
    *,
    limit: int = 50,
    before: int | None = None,
    window: int = SEARCH_WINDOW_IDS,
) -> tuple[list[models.Job], int | None]:
    """The newest `limit` jobs of `found` (its payload given) among the `window` ids below
    `before` (None: the newest job), and the id the window ended at, where the next page's
    search starts (None: it reached the first job)."""
    if found.payload is None:
        raise ValueError("list_jobs_containing needs a payload filter")
    async with _connection(db) as conn:
        ceiling: int = await conn.fetchval(queries.JOB_ID_CEILING)
        start = ceiling if before is None else min(before, ceiling)
        floor = max(1, start - window)
        records = await conn.fetch(
            queries.LIST_JOBS_CONTAINING,
            found.queue,
            None if found.state is None else found.state.value,
            found.kind,
            json.dumps(found.payload),
            start,
            limit,
            floor,
        )
    return _jobs(records), floor if floor > 1 else None


async def count_retryable(db: Executor, found: reports.JobFilter) -> tuple[int, int | None]:
    """How many failed or cancelled jobs of `found` a bulk retry would queue again, and the
    newest one's id (None when there is none): pass it to `retry_matching` as `up_to`."""
    record = await db.fetchrow(
        queries.COUNT_RETRYABLE, *_parameters(found, found.states(RETRYABLE))
    )
    assert record is not None  # an aggregate always answers one row
    return record["jobs"], record["newest"]


async def retry_matching(db: Executor, found: reports.JobFilter, up_to: int) -> int:
    """Every failed or cancelled job of `found` with an id up to `up_to` back to queued, with a
    fresh attempt budget, in one statement; returns how many."""
    record = await db.fetchrow(
        queries.RETRY_MATCHING, *_parameters(found, found.states(RETRYABLE)), up_to
    )
    assert record is not None
    jobs: int = record["jobs"]
    return jobs


async def count_cancellable(db: Executor, found: reports.JobFilter) -> tuple[int, int | None]:
    """How many queued jobs (and running ones not yet asked to stop) of `found` a bulk cancel
    would change, and the newest one's id (None when there is none)."""
    record = await db.fetchrow(
        queries.COUNT_CANCELLABLE, *_parameters(found, found.states(CANCELLABLE))
    )
    assert record is not None
    return record["jobs"], record["newest"]


async def cancel_matching(db: Executor, found: reports.JobFilter, up_to: int) -> tuple[int, int]:
    """Cancel every job `count_cancellable` counts with an id up to `up_to`, in one statement:
    the queued ones at once, the running ones within a heartbeat of their worker. Returns
    (cancelled now, running ones asked to stop)."""
    record = await db.fetchrow(
        queries.CANCEL_MATCHING, *_parameters(found, found.states(CANCELLABLE)), up_to
    )
    assert record is not None
    return record["cancelled"], record["stopping"]
