"""Held jobs: renew, progress, and a handler's own transaction on its row."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import asyncpg

from pgqueue import queries
from pgqueue.store._common import Executor, _milliseconds


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a worker believes it holds, with progress waiting to be written."""

    job_id: int
    lease_token: int
    progress_json: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Renewal:
    """What one heartbeat learned.

    Args:
        renewed: jobs whose lease now runs for another lease period.
        busy: jobs still ours whose row someone held locked (a handler's transaction, a write
            of their outcome in flight): not renewed this time, and not lost either.
        cancel_requested: renewed jobs that someone asked to cancel.
        lost: jobs the worker no longer holds (reaped, finished, or taken by another worker).
    """

    renewed: frozenset[int]
    busy: frozenset[int]
    cancel_requested: frozenset[int]
    lost: frozenset[int]


async def renew(db: Executor, leases: Sequence[HeldLease], lease_s: float) -> Renewal:
    """Extend every lease of `leases` by `lease_s` from the database's now(), in one
    statement, writing their pending progress; rows someone holds locked are skipped."""
    if not leases:
        return Renewal(frozenset(), frozenset(), frozenset(), frozenset())
    fields = json.dumps(
        {str(lease.job_id): [lease.lease_token, lease.progress_json] for lease in leases}
    )
    records = await db.fetch(
        queries.RENEW_LEASES, [lease.job_id for lease in leases], fields, lease_s
    )
    renewed = frozenset(r["id"] for r in records if r["renewed"])
    busy = frozenset(r["id"] for r in records if not r["renewed"])
    return Renewal(
        renewed=renewed,
        busy=busy,
        cancel_requested=frozenset(r["id"] for r in records if r["cancel_requested"]),
        lost=frozenset(lease.job_id for lease in leases) - renewed - busy,
    )


async def set_progress(
    db: Executor, job_id: int, lease_token: int, progress_json: str
) -> bool | None:
    """Write a held job's progress (fenced). Returns whether a cancel was requested, or None
    when the lease was lost."""
    record = await db.fetchrow(queries.SET_PROGRESS, job_id, lease_token, progress_json)
    return None if record is None else bool(record["cancel_requested"])


async def lock_held(
    conn: asyncpg.Connection, job_id: int, lease_token: int, *, idle_limit_s: float
) -> bool:
    """Inside `conn`'s transaction, lock the held job's row (the reaper then cannot take it
    until the transaction ends); False when the lease is already lost.

    The transaction may then sit idle for at most `idle_limit_s`: a worker cut off from the
    database mid-transaction leaves its session idle in transaction, holding the row lock
    that keeps every reaper away, until the server notices the dead link (hours, with TCP's
    defaults). The server ends such a transaction at this limit instead.
    """
    record = await conn.fetchrow(
        queries.LOCK_HELD_JOB, job_id, lease_token, _milliseconds(idle_limit_s)
    )
    return record is not None


async def extend_held(
    conn: asyncpg.Connection, job_id: int, lease_token: int, lease_s: float
) -> None:
    """Inside `conn`'s transaction (which holds the job's row), renew its lease from the
    moment of the call, not from the transaction's start."""
    await conn.execute(queries.EXTEND_HELD_LEASE, job_id, lease_token, lease_s)
