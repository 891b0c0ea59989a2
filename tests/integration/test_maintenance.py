"""Stats stay exact and cheap; retention deletes old finished jobs in batches."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from pgqueue import JobContext, JobSpec, Queue, Registry, RetryLater, queries, store
from pgqueue.reports import QueueStats
from pgqueue.worker.config import WorkerConfig
from pgqueue.worker.events import Hooks
from pgqueue.worker.maintenance import Maintenance
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

ALL_KINDS = ["k", "ok", "bad", "batched", "job"]  # the kinds these tests claim by hand


async def test_stats_count_every_state(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("ok")
    async def ok(ctx: JobContext) -> None:
        return None

    @registry.handler("bad")
    async def bad(ctx: JobContext) -> None:
        raise RuntimeError("x")

    await queue.enqueue_many(
        [JobSpec(kind="ok") for _ in range(4)] + [JobSpec(kind="bad", max_attempts=1)]
    )
    async with running_worker(registry):
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 5 FROM pgqueue.jobs WHERE finished_at IS NOT NULL"
            )
        )
    await queue.enqueue("ok", delay=timedelta(hours=1))
    await queue.enqueue_many([JobSpec(kind="ok") for _ in range(2)])
    cancelled = await queue.enqueue("ok", queue="side")
    await queue.cancel(cancelled.id)
    async with pool.acquire() as conn:
        await conn.fetch(queries.CLAIM_JOBS, ["default"], 1, "w", 60.0, ALL_KINDS)
    stats = await queue.stats()
    assert stats["default"] == QueueStats(
        "default", waiting=1, delayed=1, active=1, completed=4, failed=1, cancelled=0
    )
    assert stats["side"] == QueueStats("side", 0, 0, 0, 0, 0, cancelled=1)
    view = await pool.fetch("SELECT * FROM pgqueue.queue_stats ORDER BY queue")
    assert [QueueStats.from_record(r) for r in view] == [stats["default"], stats["side"]]


async def test_stats_do_not_scan_finished_rows(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO pgqueue.jobs (kind, state, finished_at)"
        " SELECT 'k', 'succeeded', now() FROM generate_series(1, 20000)"
    )
    await pool.execute("ANALYZE pgqueue.jobs")
    plan = "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + queries.QUEUE_STATS))
    assert "Seq Scan on jobs" not in plan, plan
    (row,) = await pool.fetch(queries.QUEUE_STATS)
    assert row["completed"] == 20000


async def test_retention_deletes_old_finished_jobs_only(queue: Queue, pool: asyncpg.Pool) -> None:
    await pool.execute(
        """
        INSERT INTO pgqueue.jobs (kind, state, finished_at)
        SELECT 'k', s.state::pgqueue.job_state, now() - s.age
        FROM (VALUES ('succeeded', interval '8 days'), ('succeeded', interval '1 day'),
                     ('cancelled', interval '8 days'), ('failed', interval '8 days'),
                     ('failed', interval '31 days')) AS s(state, age),
             generate_series(1, 250)
        """
    )
    live = await queue.enqueue("k")
    deleted = await queue.purge_finished(
        succeeded_older_than=timedelta(days=7), failed_older_than=timedelta(days=30), batch_size=100
    )
    assert deleted == 750
    left = await pool.fetch(
        "SELECT state, count(*) AS n FROM pgqueue.jobs GROUP BY state ORDER BY state"
    )
    assert {r["state"]: r["n"] for r in left} == {"queued": 1, "succeeded": 250, "failed": 250}
    assert await queue.get(live.id) is not None
    stats = (await queue.stats())["default"]
    assert (stats.completed, stats.failed, stats.cancelled) == (250, 250, 0)
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.finished_counts") == 2  # folded


async def test_a_busy_worker_vacuums_the_queue_tables(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # Autovacuum visits a table once a minute at best; a worker that ran `vacuum_every_jobs`
    # jobs vacuums by itself, which removes the dead claim-index entries its claims leave.
    registry = Registry()
    registry.handler("ok")(_noop)

    async def vacuumed_since(before: int) -> bool:
        count: int = await pool.fetchval(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
        )
        return count > before

    before = await pool.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    )
    await queue.enqueue_many([JobSpec(kind="ok") for _ in range(30)])
    async with running_worker(registry, vacuum_every_jobs=20):
        await wait_for(lambda: vacuumed_since(before), timeout=15)


async def _noop(ctx: JobContext) -> None:
    return None


async def test_retention_deletes_the_rows_nothing_else_deletes(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # Per-tenant keys throttled by a 429 (no limit of their own): each left a row for ever.
    registry = Registry()
    throttled: set[int] = set()

    @registry.handler("tenant")
    async def tenant(ctx: JobContext) -> None:
        if ctx.job.id not in throttled:  # a throttle gives the attempt back: count here
            throttled.add(ctx.job.id)
            raise RetryLater("429 Too Many Requests", throttle_s=0.2)

    await queue.enqueue_many(
        [JobSpec("tenant", rate_limit_key=f"tenant-{n}", max_attempts=2) for n in range(5)]
    )
    # What must stay: a key with a limit, one with a breaker, an adaptive one, one whose
    # throttle still runs.
    await queue.set_rate_limit("limited", 5, 60)
    await queue.set_breaker("guarded")
    await queue.set_adaptive_rate_limit("learning", ceiling=10)
    await pool.execute("SELECT pgqueue.throttle_rate_limit_key('paused', 3600)")
    # A schedule no scheduler has marked for eight days (removed from every registry), one
    # unmarked for two (its fleet is down, or deploying), one marked just now.
    for name, age in (("removed", 8), ("resting", 2), ("live", 0)):
        await pool.execute(
            "INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick,"
            " seen_at) VALUES ($1, 'k', 'default', 'every 60s', now(), now(),"
            " now() - $2::interval)",
            name,
            timedelta(days=age),
        )
    listed = {s["name"]: s["stale"] for s in await queue.schedules()}
    assert listed == {"live": False, "removed": True, "resting": True}
    # An ended dashboard session and a current one.
    await store.open_session(pool, b"e" * 32, b"sealed", 0.001)
    await store.open_session(pool, b"c" * 32, b"sealed", 3600)

    async with running_worker(registry, maintenance_interval_s=0.2):

        async def tenants_done() -> bool:
            return await pool.fetchval(
                "SELECT count(*) = 5 FROM pgqueue.jobs WHERE state = 'succeeded'"
            )

        await wait_for(tenants_done, message="every tenant's job, after its 429")

        async def tenants_purged() -> bool:
            keys = {r["key"] for r in await queue.rate_limits()}
            return not any(key.startswith("tenant-") for key in keys)

        await wait_for(tenants_purged, message="the tenants' idle keys deleted")
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 2 FROM pgqueue.schedules"),
            message="the schedule unmarked for a week deleted",
        )
    assert sorted(r["key"] for r in await queue.rate_limits()) == [
        "guarded",
        "learning",
        "limited",
        "paused",
    ]
    assert sorted(s["name"] for s in await queue.schedules()) == ["live", "resting"]
    assert await store.read_session(pool, b"c" * 32) == b"sealed"
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.dashboard_sessions") == 1


async def test_a_vacuum_that_removes_nothing_backs_off_until_one_does(
    queue: Queue, pool: asyncpg.Pool, db_url: str
) -> None:
    # While a snapshot is held, the dead versions the claims leave stay: a VACUUM removes
    # nothing and reads them all again. The worker waits twice as many jobs before the next.
    done = 0
    maintenance = Maintenance(
        pool,
        WorkerConfig(vacuum_every_jobs=10),
        Hooks(),
        on_requeued=lambda: None,
        jobs_done=lambda: done,
    )
    jobs = await queue.enqueue_many([JobSpec(kind="k")] * 100)
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction(isolation="repeatable_read", readonly=True):
            await holder.fetchval("SELECT count(*) FROM pgqueue.jobs")
            await pool.execute(
                "UPDATE pgqueue.jobs SET priority = 1 WHERE id = ANY ($1::bigint[])",
                [job.id for job in jobs],
            )
            done = 10
            await maintenance.vacuum_if_busy()
            done = 29  # 19 since: not due any more
            await maintenance.vacuum_if_busy()
            assert await _vacuum_count(pool) == 1
        done = 30
        await maintenance.vacuum_if_busy()  # the snapshot is gone: this one removes them
        done = 40
        await maintenance.vacuum_if_busy()  # and the usual interval is back
        assert await _vacuum_count(pool) == 3
    finally:
        await holder.close()


async def _vacuum_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    )
    return count
