"""Lease renewal: one batched UPDATE renews every lease a worker holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import asyncpg

from pgqueue import queries


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease the worker believes it holds, plus progress waiting to be written."""

    job_id: int
    lease_token: int
    pending_progress: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Renewal:
    """What one heartbeat learned.

    Args:
        renewed: jobs whose lease now runs for another lease period.
        cancel_requested: renewed jobs that someone asked to cancel.
        lost: jobs the worker no longer holds (reaped, or taken by another worker).
    """

    renewed: frozenset[int]
    cancel_requested: frozenset[int]
    lost: frozenset[int]


async def renew(conn: asyncpg.Connection, leases: Sequence[HeldLease], lease_s: float) -> Renewal:
    """Extend all of `leases` by `lease_s` seconds from the database's now(), in one statement."""
    if not leases:
        return Renewal(frozenset(), frozenset(), frozenset())
    fields = queries.keyed_fields(
        (lease.job_id, f"[{lease.lease_token},{lease.pending_progress or 'null'}]")
        for lease in leases
    )
    records = await conn.fetch(
        queries.RENEW_LEASES, [lease.job_id for lease in leases], fields, lease_s
    )
    renewed = frozenset(r["id"] for r in records)
    return Renewal(
        renewed=renewed,
        cancel_requested=frozenset(r["id"] for r in records if r["cancel_requested"]),
        lost=frozenset(lease.job_id for lease in leases) - renewed,
    )
