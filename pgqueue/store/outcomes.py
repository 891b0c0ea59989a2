"""The end of an attempt, written fenced by its lease: complete (many at once, or one inside
the handler's own transaction), fail, throttle, cancel, release.

Every statement here is of `queries/outcomes.py`; the one that completes and claims in a
single round trip is a claim first, and lives in `claims.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import asyncpg

from pgqueue import models, queries
from pgqueue.store._common import Executor, _connection, _job_or_none
from pgqueue.store.leases import HeldLease

MAX_DELAY_S = 365 * 86400.0  # seconds; the longest a retry may be put off (a year)


@dataclasses.dataclass(frozen=True, slots=True)
class Success:
    """A finished handler's success, to be written fenced by its lease.

    Args:
        job_id: the job.
        lease_token: the claim's fencing token.
        result_json: the result, already encoded (so a value that is not JSON fails only its
            own job, where it was produced).
        progress_json: throttled progress not yet written, encoded, or None.
    """

    job_id: int
    lease_token: int
    result_json: str
    progress_json: str | None = None


def capped_delay_s(delay_s: float) -> float:
    """`delay_s` as a retry delay the database can store: finite, >= 0, at most a year."""
    if math.isnan(delay_s):
        raise ValueError("a retry delay must be a number of seconds, got NaN")
    return min(max(delay_s, 0.0), MAX_DELAY_S)


def _success_fields(successes: Sequence[Success]) -> tuple[list[int], str]:
    fields = {str(s.job_id): [s.lease_token, s.result_json, s.progress_json] for s in successes}
    return [s.job_id for s in successes], json.dumps(fields)


async def complete(db: Executor, successes: Sequence[Success]) -> set[int]:
    """Write these successes, each fenced by its lease; returns the ids written."""
    if not successes:
        return set()
    rows = await db.fetch(queries.COMPLETE_JOBS, *_success_fields(successes))
    return {row["id"] for row in rows}


async def complete_held(conn: asyncpg.Connection, success: Success) -> models.Job | None:
    """Write one success inside `conn`'s transaction (fenced); None when the lease was lost."""
    record = await conn.fetchrow(
        queries.COMPLETE_JOB,
        success.job_id,
        success.lease_token,
        success.result_json,
        success.progress_json,
    )
    return _job_or_none(record)


async def fail_attempt(
    db: Executor,
    job_id: int,
    lease_token: int,
    *,
    retryable: bool,
    delay_s: float,
    error: str,
    progress_json: str | None,
) -> models.Job | None:
    """Record a failed attempt (fenced): retry after `delay_s`, or fail for good, or end
    cancelled when a cancel was requested. Returns the row written, None when the lease was
    lost."""
    record = await db.fetchrow(
        queries.FAIL_ATTEMPT,
        job_id,
        lease_token,
        retryable,
        capped_delay_s(delay_s),
        error,
        progress_json,
    )
    return _job_or_none(record)


async def throttle(
    db: Executor,
    job_id: int,
    lease_token: int,
    rate_limit_key: str,
    *,
    pause_s: float,
    delay_s: float,
    error: str,
    progress_json: str | None,
) -> models.Job | None:
    """The handler's upstream pushed back: requeue the job (fenced) after `delay_s` or
    `pause_s`, whichever is longer, without spending its attempt, and pause its key for
    `pause_s` on every worker (unless it is an adaptive key's refused probe), in one transaction
    (nothing else sees the job back in the queue with its key still open). Returns the row
    written (`cancelled` when a cancel was requested), None when the lease was lost."""
    async with _connection(db) as conn, conn.transaction():
        record = await conn.fetchrow(
            queries.THROTTLE_JOB,
            job_id,
            lease_token,
            # The job itself waits out the throttle even when its key is not paused (an
            # adaptive key's refused probe pauses nobody else, schema v16).
            capped_delay_s(max(delay_s, pause_s)),
            error,
            progress_json,
        )
        if record is None:
            return None
        job = models.Job.from_record(record)
        if job.state is models.JobState.QUEUED:
            await conn.execute(
                queries.PAUSE_RATE_LIMIT_KEY,
                rate_limit_key,
                capped_delay_s(pause_s),
                job.started_at,
            )
        return job


async def cancel_held(db: Executor, job_id: int, lease_token: int, error: str) -> models.Job | None:
    """End a held job `cancelled` (fenced); None when the lease was lost."""
    return _job_or_none(await db.fetchrow(queries.CANCEL_HELD_JOB, job_id, lease_token, error))


async def release(db: Executor, leases: Sequence[HeldLease]) -> dict[int, models.JobState]:
    """Give held jobs back without spending their attempt (fenced); a job whose cancel was
    requested ends cancelled instead. Returns each released job's new state."""
    if not leases:
        return {}
    tokens = json.dumps({str(lease.job_id): lease.lease_token for lease in leases})
    rows = await db.fetch(queries.RELEASE_JOBS, [lease.job_id for lease in leases], tokens)
    return {row["id"]: models.JobState(row["state"]) for row in rows}
