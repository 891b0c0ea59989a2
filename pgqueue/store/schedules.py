"""Schedules: fire a periodic job's tick at most once, and list the schedules."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pgqueue import models, queries
from pgqueue.store._common import Executor, _connection
from pgqueue.store.enqueueing import enqueue


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


async def list_schedules(db: Executor) -> list[dict[str, Any]]:
    """Every schedule (for the dashboard): name, kind, queue, schedule, ticks, last job."""
    return [dict(record) for record in await db.fetch(queries.LIST_SCHEDULES)]
