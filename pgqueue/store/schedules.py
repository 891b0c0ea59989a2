"""Schedules: fire a periodic job's tick at most once, and list the schedules."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pgqueue import models, queries
from pgqueue.store._common import Executor, _connection
from pgqueue.store.enqueueing import enqueue

# A scheduler marks its registry's schedules every few minutes (worker/scheduler.py), so a row
# unmarked for an hour belongs to no running registry: the dashboard says it is stale. It is
# deleted only after a week: during a deploy, old and new workers run side by side, and a
# fleet stopped for a while keeps its schedules' last ticks (their catch-up tick) when it
# comes back within the week.
SCHEDULE_STALE_AFTER_S = 3600.0
SCHEDULE_PRUNE_AFTER_S = 7 * 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleTick:
    """One tick of a periodic job, as the scheduler asks for it."""

    name: str
    kind: str
    queue: str
    schedule: str
    payload: Any
    tick: datetime
    next_tick: datetime

    @property
    def idempotency_key(self) -> str:
        """The job's key: one job per schedule and tick, even if a tick were fired twice."""
        return f"pgqueue.schedule:{self.name}:{self.tick.isoformat()}"


async def database_now(db: Executor) -> datetime:
    """The database's `now()`."""
    moment: datetime = await db.fetchval(queries.DATABASE_NOW)
    return moment


async def fire_schedule(
    db: Executor, tick: ScheduleTick, *, max_attempts: int
) -> models.Job | None:
    """Enqueue `tick`'s job unless the schedule is new (it then starts from `tick`) or another
    worker fired this tick already; one transaction, so a tick becomes at most one job."""
    args = (tick.name, tick.kind, tick.queue, tick.schedule, tick.tick, tick.next_tick)
    async with _connection(db) as conn, conn.transaction():
        if await conn.fetchval(queries.INSERT_SCHEDULE, *args) is not None:
            return None
        if await conn.fetchval(queries.ADVANCE_SCHEDULE, *args) is None:
            return None
        spec = models.JobSpec(
            kind=tick.kind,
            payload=tick.payload,
            queue=tick.queue,
            idempotency_key=tick.idempotency_key,
        )
        [job] = await enqueue(conn, [spec], default_queue=tick.queue, max_attempts=max_attempts)
        await conn.execute(queries.SET_SCHEDULE_JOB, tick.name, job.id)
    return job


async def mark_schedules_seen(db: Executor, names: list[str]) -> None:
    """Mark the schedules `names` as still in a running scheduler's registry."""
    await db.execute(queries.MARK_SCHEDULES_SEEN, names)


async def prune_unseen_schedules(
    db: Executor, *, unseen_for_s: float = SCHEDULE_PRUNE_AFTER_S
) -> int:
    """Delete the schedules no scheduler has marked for `unseen_for_s`; how many."""
    status = await db.execute(queries.PRUNE_UNSEEN_SCHEDULES, unseen_for_s)
    return int(status.split()[-1])


async def list_schedules(db: Executor) -> list[dict[str, Any]]:
    """Every schedule (for the dashboard): name, kind, queue, schedule, ticks, last job, when
    a scheduler last marked it (`seen_at`) and whether that is too long ago (`stale`)."""
    records = await db.fetch(queries.LIST_SCHEDULES, SCHEDULE_STALE_AFTER_S)
    return [dict(record) for record in records]
