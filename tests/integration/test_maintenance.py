"""Stats stay exact and cheap; retention deletes old finished jobs in batches."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from pgqueue import JobContext, JobSpec, Queue, Registry, queries
from pgqueue.models import QueueStats
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
