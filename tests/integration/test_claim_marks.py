"""Claim marks (schema v15): claims start at a mark per queue and priority, the marks move past
claimed jobs, and no job that lands before its mark is ever left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pgqueue import JobSpec, Queue, queries, store
from tests.integration.test_claim import claim

# -- mark: where claims of a queue and priority start
MARK = """
SELECT run_at, id FROM pgqueue.claim_marks WHERE queue = $1 AND priority = $2
"""


def hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


async def advance(pool: asyncpg.Pool, queues: list[str] | None = None) -> int:
    """One advance, as the worker's task runs it (without its pause between moves)."""
    return await store.advance_claim_marks(pool, queues or ["default"], every_s=0)


async def mark(pool: asyncpg.Pool, queue: str = "default", priority: int = 0) -> tuple[Any, int]:
    row = await pool.fetchrow(MARK, queue, priority)
    assert row is not None
    return row["run_at"], row["id"]


async def claim_all(pool: asyncpg.Pool) -> list[int]:
    return [row["id"] for row in await claim(pool, 1000)]


async def test_an_enqueue_creates_its_mark_and_a_claim_finds_the_job(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue("k", queue="fresh", priority=3)
    assert await mark(pool, "fresh", 3) == (job.run_at, job.id)
    assert [row["id"] for row in await claim(pool, 10, queues=["fresh"])] == [job.id]


async def test_the_marks_move_past_claimed_jobs_while_a_snapshot_is_held(
    queue: Queue, pool: asyncpg.Pool, db_url: str
) -> None:
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction(isolation="repeatable_read", readonly=True):
            await holder.fetchval("SELECT count(*) FROM pgqueue.jobs")
            jobs = await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 20)
            assert len(await claim_all(pool)) == 20
            # The first advance may only reach the bound its predecessor recorded; the second
            # passes every claimed job, though the snapshot keeps their old versions.
            await advance(pool)
            await advance(pool)
            assert await mark(pool) > (max(j.run_at for j in jobs), max(j.id for j in jobs))
    finally:
        await holder.close()


async def test_a_job_enqueued_before_the_mark_lowers_it(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 5)
    await claim_all(pool)
    await advance(pool)
    await advance(pool)
    old = await queue.enqueue("k", run_at=datetime.now(UTC) - timedelta(days=1))
    assert await mark(pool) == (old.run_at, old.id)
    assert await claim_all(pool) == [old.id]


async def test_a_higher_priority_arriving_is_claimed_first(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 3)
    await claim(pool, 1)
    await advance(pool)
    urgent = await queue.enqueue("k", priority=-5, run_at=datetime.now(UTC) - timedelta(days=2))
    rows = await claim(pool, 1)
    assert [row["id"] for row in rows] == [urgent.id]


async def test_a_requeued_job_is_claimed_again(queue: Queue, pool: asyncpg.Pool) -> None:
    jobs = await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 3)
    assert len(await claim_all(pool)) == 3
    await advance(pool)
    await advance(pool)
    # As the reaper or a retry puts a job back, with an old run_at: before the mark.
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'queued', run_at = run_at, worker_id = NULL,"
        " lease_token = NULL, lease_expires_at = NULL, started_at = NULL WHERE id = $1",
        jobs[0].id,
    )
    assert await claim_all(pool) == [jobs[0].id]


async def test_a_late_enqueue_still_open_holds_its_mark_back(
    queue: Queue, pool: asyncpg.Pool, db_url: str
) -> None:
    await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 3)
    await claim_all(pool)
    other = await asyncpg.connect(db_url)
    try:
        async with other.transaction():
            late = await Queue(other).enqueue("k", run_at=hour_ago())
            # The enqueue share-locks the mark: the advance leaves it alone meanwhile.
            assert await advance(pool) == 0
        assert await claim_all(pool) == [late.id]
    finally:
        await other.close()


async def test_an_enqueue_still_open_is_never_passed(
    queue: Queue, pool: asyncpg.Pool, db_url: str
) -> None:
    await queue.enqueue("k", run_at=hour_ago())
    await claim_all(pool)
    other = await asyncpg.connect(db_url)
    try:
        async with other.transaction():
            job = await Queue(other).enqueue("k")  # on time: it locks nothing
            for _ in range(3):
                await advance(pool)
                assert await mark(pool) <= (job.run_at, job.id)
        assert await claim_all(pool) == [job.id]
    finally:
        await other.close()


async def test_a_rolled_back_claim_leaves_its_jobs_claimable(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    jobs = await queue.enqueue_many([JobSpec(kind="k", run_at=hour_ago())] * 4)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        taken = await conn.fetch(queries.CLAIM_JOBS, ["default"], 2, "w", 30.0, ["k"])
        assert len(taken) == 2
        await advance(pool)
        await advance(pool)
        await tx.rollback()
    assert sorted(await claim_all(pool)) == sorted(j.id for j in jobs)


async def test_a_truncate_clears_the_marks(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue("k")
    await pool.execute("TRUNCATE pgqueue.jobs")
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.claim_marks") == 0
    job = await queue.enqueue("k")
    assert await claim_all(pool) == [job.id]
