"""The end of a generation that no image will finish: the storyboard turns `failed`, with an
error a person can read.

* `fail_for_good`: the worker's `failed` and `stalled` hooks (see `jobs.py`) call it once a
  job failed for good, the one place that rule runs;
* `reconcile` repairs, on read, only what no hook can see (see its docstring);
* `failure_error` is the one wording of such an error.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import asyncpg

from pgqueue import Job, JobState, Queue
from service import queries
from service.payloads import StoryboardPayload

MAX_ERROR_CHARS = 1000  # of a storyboard's error
# Exceptions whose message is the whole story: the service raises them on purpose, with a
# message meant for a person, so their class name is noise in a storyboard's error.
PLAIN_MESSAGE_ERRORS = frozenset(
    {"DoNotRetry", "RetryLater", "ImageError", "PermanentImageError", "RetryableImageError"}
)
# The last line of a Python traceback: `module.path.ClassName: message`.
_EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*): (.+)")


async def fail_for_good(
    conn: asyncpg.Connection, payload: StoryboardPayload, job: Job
) -> asyncpg.Record | None:
    """Mark the storyboard of `job`, which failed for good, `failed`; then finish the project.

    Fenced: only while the storyboard is still `generating` under this job, so a storyboard
    that a later job took over, or that the read-side repair already failed, is left alone.
    One transaction, the project locked first (the order `queries` documents).

    Args:
        conn: a connection outside any transaction.
        payload: the job's payload.
        job: the job as its final write left it (`failed` or `cancelled`).

    Returns:
        The project's new counts (as `FINISH_PROJECT` returns them), or None when the fence
        left the storyboard alone.
    """
    error = failure_error(job.state, job.last_error)
    async with conn.transaction():
        await conn.execute(queries.LOCK_PROJECT, payload.project_id)
        failed = await conn.fetch(
            queries.FAIL_STORYBOARDS,
            payload.project_id,
            [payload.shot_number],
            [job.id],
            [error],
            [job.attempts],
        )
        if not failed:
            return None
        counts: asyncpg.Record | None = await conn.fetchrow(
            queries.FINISH_PROJECT, payload.project_id
        )
        return counts


def failure_error(
    job_state: JobState | str | None, last_error: str | None, timeout_s: float | None = None
) -> str:
    """The error a person reads on a storyboard whose job will never finish it.

    For a job that failed or was cancelled: the last line of its `last_error` (the message of
    the exception, for the errors the service raises on purpose; `Type: message` otherwise).
    For a job that succeeded without writing, or none at all (gone, or its lease lapsed for
    `timeout_s`), a sentence saying so.
    """
    if job_state in (JobState.FAILED, JobState.CANCELLED):
        lines = [line.strip() for line in (last_error or "").splitlines() if line.strip()]
        if not lines:
            return f"job {job_state} with no error recorded"
        line = lines[-1]
        match = _EXCEPTION_LINE.fullmatch(line)
        if match is not None:
            name, message = match.groups()
            line = message if name in PLAIN_MESSAGE_ERRORS else f"{name}: {message}"
        return line[:MAX_ERROR_CHARS]
    if job_state == JobState.SUCCEEDED:
        return "job finished without storing an image"
    after = "" if timeout_s is None else f" after {timeout_s:g} s"
    return f"timed out: still generating{after} with no live job"


async def reconcile(
    conn: asyncpg.Connection, queue: Queue, project_id: uuid.UUID, timeout_s: float
) -> bool:
    """Fail the project's storyboards that nothing will finish, then update its status.

    The worker's hooks fail a storyboard whose job failed for good (`fail_for_good`); this
    read-side repair is only for what no hook sees: a worker killed between the job's final
    write and its hook (or a hook that could not reach the database), a job cancelled before
    any worker ran it (no worker, no hook), a job that succeeded without writing, a
    storyboard `generating` for `timeout_s` with no live job (the job was deleted, or its
    lease lapsed with no worker left to reap it), and an attempt still running `timeout_s`
    after it started (its job's time limit should have ended it first; should its image
    still come, the success lands). It writes with the same fence and the same error rule as
    the hooks, so a repair and a late hook never disagree.

    The check runs without locks, so that polling stays cheap; only when there is something to
    repair is the project locked (before the storyboards: the order `queries` documents).
    Callers check that the reader owns the project first.

    Returns:
        Whether there was something to repair (the project's row may then have changed).
    """
    if not await conn.fetchval(queries.HAS_STALE_STORYBOARDS, project_id, timeout_s):
        return False
    async with conn.transaction():
        await conn.execute(queries.LOCK_PROJECT, project_id)
        await fail_stale(conn, queue, project_id, timeout_s)
        await conn.execute(queries.FINISH_PROJECT, project_id)
    return True


async def fail_stale(
    conn: asyncpg.Connection, queue: Queue, project_id: uuid.UUID, timeout_s: float
) -> None:
    """The repair of `reconcile` (and of `generate`, before it regenerates), in the caller's
    transaction, which holds the project's lock."""
    stale: Sequence[asyncpg.Record] = await conn.fetch(
        queries.SELECT_STALE_STORYBOARDS, project_id, timeout_s
    )
    if not stale:
        return
    await conn.execute(
        queries.FAIL_STORYBOARDS,
        project_id,
        [r["shot_number"] for r in stale],
        [r["job_id"] for r in stale],
        [_stale_error(r, timeout_s) for r in stale],
        [r["job_attempts"] or 0 for r in stale],
    )
    # A job still waiting to start will not be wanted: cancel it with the failure (in the same
    # transaction), so it never makes a paid call for a storyboard that reads failed.
    for record in stale:
        if record["job_state"] == JobState.QUEUED:
            await queue.cancel(record["job_id"], conn=conn)


def _stale_error(record: asyncpg.Record, timeout_s: float) -> str:
    if record["overdue"]:
        return f"timed out: the attempt was still running after {timeout_s:g} s"
    if record["job_state"] == JobState.QUEUED:
        waited = f"timed out: still waiting to start after {timeout_s:g} s"
        last = failure_error(JobState.FAILED, record["last_error"]) if record["last_error"] else ""
        return f"{waited} (the last attempt: {last})" if last else waited
    return failure_error(record["job_state"], record["last_error"], timeout_s)
