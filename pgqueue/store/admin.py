"""Inspect and manage jobs and queues: get, cancel, list, retry, pause, stats."""

from __future__ import annotations

from collections.abc import Sequence

from pgqueue import models, queries, reports
from pgqueue.store._common import Executor, _connection, _job_or_none, _jobs


async def get_job(db: Executor, job_id: int) -> models.Job | None:
    """The job with this id, or None."""
    return _job_or_none(await db.fetchrow(queries.GET_JOB, job_id))


async def get_jobs(db: Executor, job_ids: Sequence[int]) -> list[models.Job]:
    """The jobs with these ids that exist, newest first."""
    return _jobs(await db.fetch(queries.GET_JOBS, list(job_ids)))


async def cancel_job(db: Executor, job_id: int) -> models.Job | None:
    """Cancel a job: queued ones at once, running ones are flagged for their worker.

    Returns the job as it is afterwards (a terminal job unchanged), or None when none exists.
    """
    async with _connection(db) as conn:
        record = await conn.fetchrow(queries.CANCEL_JOB, job_id)
        if record is None:
            record = await conn.fetchrow(queries.GET_JOB, job_id)
    return _job_or_none(record)


async def queue_stats(db: Executor) -> dict[str, reports.QueueStats]:
    """Counts per queue, from the `pgqueue.queue_stats` view."""
    records = await db.fetch(queries.QUEUE_STATS)
    return {r["queue"]: reports.QueueStats.from_record(r) for r in records}


async def count_waiting(db: Executor, queues: Sequence[str]) -> int:
    """Runnable jobs (queued, `run_at` passed) in these queues."""
    count: int = await db.fetchval(queries.COUNT_WAITING, list(queues))
    return count


MAX_JOB_ID = 2**63 - 1  # above every id: the first page of a listing reads below it


async def list_jobs(db: Executor, page: reports.JobPage) -> list[models.Job]:
    """The jobs `page` asks for, newest first (see `queries.LIST_JOBS`)."""
    payload_key, payload_values = page.payload_match or (None, [])
    # The statement whose index fits the filters: a state few rows are in, else a kind.
    if page.state in (models.JobState.FAILED, models.JobState.CANCELLED):
        statement = queries.LIST_JOBS_ENDED_BADLY
    elif page.kind is not None:
        statement = queries.LIST_JOBS_OF_KIND
    else:
        statement = queries.LIST_JOBS
    records = await db.fetch(
        statement,
        MAX_JOB_ID if page.before is None else page.before,
        page.queue,
        None if page.state is None else page.state.value,
        page.kind,
        payload_key,
        list(payload_values),
        page.limit,
    )
    return _jobs(records)


async def retry_job(db: Executor, job_id: int) -> models.Job | None:
    """Put a failed or cancelled job back to `queued` with a fresh attempt budget.

    Returns the job as queued again, or None when no failed or cancelled job has this id.
    """
    return _job_or_none(await db.fetchrow(queries.RETRY_JOB, job_id))


async def pause_queue(db: Executor, queue: str) -> None:
    """Stop every claim from taking jobs of `queue` (idempotent)."""
    await db.execute(queries.PAUSE_QUEUE, queue)


async def resume_queue(db: Executor, queue: str) -> None:
    """Let claims take jobs of `queue` again, and wake its workers (idempotent)."""
    await db.execute(queries.RESUME_QUEUE, queue)


async def queue_overview(db: Executor) -> list[reports.QueueInfo]:
    """Every queue with jobs, counters or a pause: its counts, pause, oldest wait, recent rate."""
    return [reports.QueueInfo.from_record(r) for r in await db.fetch(queries.QUEUE_OVERVIEW)]


async def finished_per_minute(
    db: Executor, queue: str | None, minutes: int
) -> list[reports.FinishedMinute]:
    """Jobs finished in each of the last `minutes` minutes, oldest first, the current last."""
    records = await db.fetch(queries.FINISHED_PER_MINUTE, queue, minutes)
    return [reports.FinishedMinute.from_record(r) for r in records]
