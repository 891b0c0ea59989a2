"""A user's storyboard jobs: the page `GET /api/jobs` lists, and a retry within the cap.

A user's jobs are the storyboard jobs of the user's projects, found by the project id in
their payload through the service's indexes on it (migration 0015): a listing and the
pending count read the user's own jobs, never the whole table, and every project of theirs.

A retry puts a paid upstream call back in the queue, so it counts against the user's cap of
pending jobs as a generate does, and its storyboard reads `generating` again from the same
commit (a trigger, for every retry): the cap and the status both see the job as what it is,
however it got queued.
"""

from __future__ import annotations

import asyncpg

from pgqueue import Job, JobState, Queue
from service import queries, storyboards
from service.auth import User
from service.payloads import MalformedPayload, StoryboardPayload
from service.settings import ServiceSettings

MAX_JOB_ID = 2**63 - 1  # above every id: the first page reads below it


async def list_user_jobs(
    pool: asyncpg.Pool,
    queue: Queue,
    user: User,
    *,
    queue_name: str | None,
    state: JobState | None,
    limit: int,
    before: int | None,
) -> list[Job]:
    """A page of `user`'s storyboard jobs, newest first (the filters as `Queue.list_jobs`'s)."""
    job_ids = await pool.fetch(
        queries.LIST_USER_JOB_IDS,
        user.name,
        MAX_JOB_ID if before is None else before,
        queue_name,
        None if state is None else state.value,
        limit,
    )
    if not job_ids:
        return []
    # A job deleted between the two reads (retention) is left out of this page.
    return await queue.get_many([r["id"] for r in job_ids])


async def retry(
    pool: asyncpg.Pool, queue: Queue, settings: ServiceSettings, user: User, job: Job
) -> Job:
    """Retry `job` (failed or cancelled) for `user`, who may see it.

    For a storyboard job, in one transaction: the job goes back to `queued`, and its
    storyboard, while it still belongs to this job, reads `generating` again, its time limit
    counted from now (the trigger of migration 0016, which every retry fires, the dashboard's
    and the CLI's too); for a caller who is not an admin, the owner's pending jobs (this one
    included) are then counted against the cap: 429 past it, and nothing changes. Admins
    retry as the dashboard and `python -m pgqueue retry` do, outside any user's cap.

    Raises:
        JobNotFound, JobStateConflict: as `Queue.retry`.
        ApiError: 429 past the cap.
    """
    try:
        payload = StoryboardPayload.from_job(job)
    except MalformedPayload:
        return await queue.retry(job.id)  # no storyboard, no owner: only an admin sees it
    async with pool.acquire() as conn, conn.transaction():
        # The job's row first, then the project's, then the user's lock: the order of the
        # service's other writers (queries.py), which generate follows too.
        retried = await queue.retry(job.id, conn=conn)
        project = await conn.fetchrow(queries.LOCK_JOB_PROJECT, payload.project_id)
        if project is None:
            return retried  # the project is gone: its handler skips the job
        if not user.is_admin:
            # The retried job is queued already (in this transaction), so it is counted.
            await storyboards.check_pending_cap(conn, user, 1, settings, counted=1)
    return retried
