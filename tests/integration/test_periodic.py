"""Periodic jobs: one job per tick across the fleet, and once after an outage.

Several schedulers race on a clock the test controls (the database's clock in production);
then several real workers on the database's clock, ticking every second.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from pgqueue import JobContext, Queue, Registry
from pgqueue.registry import Periodic
from pgqueue.schedules import Cron
from pgqueue.worker.scheduler import Scheduler
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

WORKERS = 3
START = datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    async def __call__(self) -> datetime:
        return self.now


async def _jobs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT kind, idempotency_key, payload FROM pgqueue.jobs ORDER BY id")


async def test_each_tick_is_one_job_however_many_schedulers_race(pool: asyncpg.Pool) -> None:
    registry = Registry()
    registry.periodic("* * * * *", "minutely", {"n": 1})
    registry.periodic(timedelta(seconds=20), "often")
    clock = Clock(START)
    schedulers = [
        Scheduler(pool, registry.periodics, default_queue="default", clock=clock)
        for _ in range(WORKERS)
    ]

    async def race() -> int:
        fired = await asyncio.gather(*(s.fire_due() for s in schedulers))
        return sum(len(jobs) for jobs in fired)

    # Seen for the first time: nothing runs now, the next tick will.
    assert await race() == 0
    assert await _jobs(pool) == []
    clock.now = START + timedelta(seconds=5)  # no new tick yet
    assert await race() == 0

    clock.now = datetime(2026, 12, 2, 10, 1, 0, tzinfo=UTC)  # both are due: 10:01:00
    assert await race() == 2
    assert await race() == 0  # the same tick again: nothing
    jobs = await _jobs(pool)
    assert sorted(j["kind"] for j in jobs) == ["minutely", "often"]
    minutely = next(j for j in jobs if j["kind"] == "minutely")
    assert minutely["idempotency_key"].endswith("2026-12-02T10:01:00+00:00")

    # An outage of ten minutes: each schedule runs once for everything it missed.
    clock.now = datetime(2026, 12, 2, 10, 11, 7, tzinfo=UTC)
    assert await race() == 2
    ticks = await pool.fetch("SELECT name, last_tick, next_tick FROM pgqueue.schedules ORDER BY 1")
    assert [(t["name"], t["last_tick"], t["next_tick"]) for t in ticks] == [
        (
            "minutely",
            datetime(2026, 12, 2, 10, 11, tzinfo=UTC),
            datetime(2026, 12, 2, 10, 12, tzinfo=UTC),
        ),
        (
            "often",
            datetime(2026, 12, 2, 10, 11, 0, tzinfo=UTC),
            datetime(2026, 12, 2, 10, 11, 20, tzinfo=UTC),
        ),
    ]
    assert len(await _jobs(pool)) == 4

    # A scheduler that restarts (forgets what it fired) does not fire a tick twice.
    fresh = Scheduler(pool, registry.periodics, default_queue="default", clock=clock)
    assert await fresh.fire_due() == []


async def test_several_workers_run_a_one_second_schedule_once_per_tick(
    pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    registry.periodic(1, "tick")
    ran: list[int] = []

    @registry.handler("tick")
    async def tick(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    async with (
        running_worker(registry),
        running_worker(registry),
        running_worker(registry),
    ):

        async def three_ticks() -> bool:
            return len(ran) >= 3

        await wait_for(three_ticks, timeout=15, message="three ticks ran")
    keys = [j["idempotency_key"] for j in await _jobs(pool)]
    assert len(keys) == len(set(keys)), keys  # one job per tick
    assert sorted(ran) == sorted(set(ran))  # each ran once
    states = await pool.fetch("SELECT DISTINCT state::text FROM pgqueue.jobs")
    assert {s["state"] for s in states} <= {"succeeded", "queued", "running"}


async def test_the_schedules_are_listed_for_the_dashboard(pool: asyncpg.Pool) -> None:
    registry = Registry()
    registry.periodic("0 3 * * *", "nightly", queue="reports")
    clock = Clock(START)
    scheduler = Scheduler(pool, registry.periodics, default_queue="default", clock=clock)
    await scheduler.fire_due()
    (listed,) = await Queue(pool).schedules()
    assert listed["name"] == "nightly" and listed["queue"] == "reports"
    assert listed["schedule"] == "0 3 * * *" and listed["last_job_id"] is None
    assert listed["next_tick"] == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def _unchecked_cron(text: str) -> Cron:
    """A Cron that skipped registration's check (as one registered before it existed did)."""
    cron = object.__new__(Cron)
    object.__setattr__(cron, "text", text)
    return cron


async def test_one_broken_schedule_does_not_stop_the_others(pool: asyncpg.Pool) -> None:
    # February 30th has no tick: asking for one raises, and it used to end the whole pass
    # before the schedules after it, on every pass, for good.
    registry = Registry()
    registry.periodics.append(Periodic("never", "k", _unchecked_cron("0 0 30 2 *")))
    registry.periodic(60, "minutely")
    clock = Clock(START)
    scheduler = Scheduler(pool, registry.periodics, default_queue="default", clock=clock)
    assert await scheduler.fire_due() == []  # the good one is seen for the first time
    clock.now += timedelta(seconds=60)
    [job] = await scheduler.fire_due()
    assert job.kind == "minutely"
    listed = await Queue(pool).schedules()
    assert [s["name"] for s in listed] == ["minutely"]
    assert listed[0]["next_tick"] > listed[0]["last_tick"]
    assert not listed[0]["stale"]


async def test_a_fractional_interval_ticks_once_per_interval(pool: asyncpg.Pool) -> None:
    registry = Registry()
    registry.periodic(1.1, "often")
    clock = Clock(datetime(2026, 12, 3, 12, 10, 8, 600000, tzinfo=UTC))
    scheduler = Scheduler(pool, registry.periodics, default_queue="default", clock=clock)
    await scheduler.fire_due()
    (listed,) = await Queue(pool).schedules()
    assert listed["next_tick"] - listed["last_tick"] == timedelta(seconds=1.1)


async def test_a_scheduler_marks_its_schedules_as_still_registered(pool: asyncpg.Pool) -> None:
    # How retention tells a schedule removed from the code (never marked again: stale, then
    # deleted) from one waiting for a rare tick (marked every few minutes by its scheduler).
    registry = Registry()
    registry.periodic("0 0 1 1 *", "yearly")
    scheduler = Scheduler(pool, registry.periodics, default_queue="default", clock=Clock(START))
    await scheduler.fire_due()
    await pool.execute("UPDATE pgqueue.schedules SET seen_at = now() - interval '2 hours'")
    assert [s["stale"] for s in await Queue(pool).schedules()] == [True]
    restarted = Scheduler(pool, registry.periodics, default_queue="default", clock=Clock(START))
    await restarted.fire_due()
    assert [s["stale"] for s in await Queue(pool).schedules()] == [False]
