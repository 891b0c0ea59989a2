"""Leases: heartbeats keep them, the reaper takes expired ones, fencing refuses stale writes."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from pgqueue import (
    JobContext,
    JobSpec,
    JobState,
    LeaseLost,
    Queue,
    Registry,
    RetryPolicy,
    models,
    queries,
    store,
)
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

CLAIM_ARGS = (["default"], 1, "test-worker", 0.2)  # a 0.2 s lease: expires almost at once

ALL_KINDS = ["k", "ok", "bad", "batched", "job"]  # the kinds these tests claim by hand


async def _claim_short_lease(pool: asyncpg.Pool) -> asyncpg.Record:
    async with pool.acquire() as conn:
        (row,) = await conn.fetch(queries.CLAIM_JOBS, *CLAIM_ARGS, ALL_KINDS)
    return row


async def _reap(
    conn: asyncpg.Connection, policy: RetryPolicy, batch_size: int = 500
) -> list[models.Job]:
    return await store.reap(conn, policy, batch_size=batch_size)


async def _expired(pool: asyncpg.Pool, job_id: int) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT lease_expires_at < now() FROM pgqueue.jobs WHERE id = $1", job_id
        )
    )


async def test_heartbeats_keep_a_long_job_alive(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    stalls: list[int] = []

    @registry.handler("long")
    async def long(ctx: JobContext) -> str:
        await asyncio.sleep(2.5)  # five leases of 0.5 s
        return "done"

    job = await queue.enqueue("long")
    async with running_worker(registry, lease_s=0.5) as worker:
        worker.on("stalled", lambda event: stalls.append(event.job_id))
        await wait_for(lambda: _done(queue, job.id), timeout=15)
    finished = await queue.get(job.id)
    assert finished is not None and finished.state == JobState.SUCCEEDED and finished.attempts == 1
    assert stalls == []


async def _done(queue: Queue, job_id: int) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state.is_terminal


async def test_reaper_requeues_expired_leases_with_backoff_and_counts_the_attempt(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue("k", max_attempts=3)
    await _claim_short_lease(pool)
    await wait_for(lambda: _expired(pool, job.id))
    async with pool.acquire() as conn:
        reaped = await _reap(conn, RetryPolicy(base_s=30, jitter=0))
    assert [(r.id, r.state) for r in reaped] == [(job.id, JobState.QUEUED)]
    row = await pool.fetchrow(
        "SELECT state, attempts, worker_id, last_error,"
        " extract(epoch FROM run_at - now()) AS wait_s FROM pgqueue.jobs WHERE id = $1",
        job.id,
    )
    assert row["state"] == "queued" and row["attempts"] == 1 and row["worker_id"] is None
    assert "lease expired" in row["last_error"] and "test-worker" in row["last_error"]
    assert 28 < row["wait_s"] <= 30


async def test_reaper_fails_a_job_whose_attempts_are_spent(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue("k", max_attempts=1)
    await _claim_short_lease(pool)
    await wait_for(lambda: _expired(pool, job.id))
    async with pool.acquire() as conn:
        reaped = await _reap(conn, RetryPolicy())
    assert [r.state for r in reaped] == [JobState.FAILED]
    failed = await queue.get(job.id)
    assert (
        failed is not None and failed.finished_at and "lease expired" in (failed.last_error or "")
    )


async def test_reaper_leaves_live_leases_alone(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue("k")
    async with pool.acquire() as conn:
        await conn.fetch(queries.CLAIM_JOBS, ["default"], 1, "w", 60.0, ALL_KINDS)
        assert await _reap(conn, RetryPolicy()) == []


async def test_reapers_running_at_once_reap_each_job_once(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many([JobSpec(kind="k") for _ in range(60)])
    async with pool.acquire() as conn:
        await conn.fetch(queries.CLAIM_JOBS, ["default"], 60, "w", 0.1, ALL_KINDS)
    await wait_for(
        lambda: pool.fetchval(
            "SELECT bool_and(lease_expires_at < now()) FROM pgqueue.jobs WHERE state = 'running'"
        )
    )

    async def reap_all() -> list[int]:
        ids: list[int] = []
        async with pool.acquire() as conn:
            # A reaper that finds the advisory lock taken reaps nothing and tries again.
            while await conn.fetchval("SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'"):
                ids.extend(r.id for r in await _reap(conn, RetryPolicy(), batch_size=7))
        return ids

    results = await asyncio.gather(*(reap_all() for _ in range(5)))
    reaped = [i for ids in results for i in ids]
    assert len(reaped) == 60 and len(set(reaped)) == 60
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pgqueue.jobs WHERE attempts = 1 AND state = 'queued'"
        )
        == 60
    )


async def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owner(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue("k", max_attempts=3)
    stale = await _claim_short_lease(pool)
    await wait_for(lambda: _expired(pool, job.id))
    async with pool.acquire() as conn:
        await _reap(conn, RetryPolicy(base_s=0, cap_s=0, jitter=0))
        (owner,) = await conn.fetch(
            queries.CLAIM_JOBS, ["default"], 1, "new-owner", 60.0, ALL_KINDS
        )
        stale_args = (job.id, stale["lease_token"])
        assert await conn.fetchrow(queries.COMPLETE_JOB, *stale_args, '"stale"', None) is None
        assert (
            await conn.fetchrow(queries.FAIL_ATTEMPT, *stale_args, True, 0.0, "stale", None) is None
        )
        assert await conn.fetchrow(queries.SET_PROGRESS, *stale_args, '{"percent": 1}') is None
        assert await conn.fetchrow(queries.CANCEL_HELD_JOB, *stale_args, "stale") is None
        stale_lease = store.HeldLease(job.id, stale["lease_token"], '{"percent": 2}')
        assert await store.release(conn, [stale_lease]) == {}
        renewal = await store.renew(conn, [stale_lease], 60.0)
        assert renewal.lost == {job.id} and not renewal.renewed and not renewal.busy
        stale_success = store.Success(job.id, stale["lease_token"], '"stale"', '{"percent": 2}')
        assert await store.complete(conn, [stale_success]) == set()
        current = await queue.get(job.id, conn=conn)
        assert current is not None and current.state == JobState.RUNNING
        assert current.worker_id == "new-owner" and current.lease_token == owner["lease_token"]
        assert current.progress is None and current.result is None
        done = await conn.fetchrow(
            queries.COMPLETE_JOB, job.id, owner["lease_token"], '"mine"', None
        )
        assert done is not None and done["state"] == "succeeded"


async def test_a_stalled_handler_loses_its_job_and_its_late_writes_are_refused(
    queue: Queue, running_worker: WorkerFactory, pool: asyncpg.Pool
) -> None:
    """Worker A stalls (its heartbeats stop), B takes the job over; A's late writes are refused."""
    registry_a = Registry()
    a_started = asyncio.Event()
    a_outcome: list[str] = []
    release_a = asyncio.Event()

    @registry_a.handler("job")
    async def slow(ctx: JobContext) -> str:
        a_started.set()
        await release_a.wait()
        try:
            async with ctx.transaction() as conn:
                await conn.execute("SELECT 1")
            a_outcome.append("wrote")
        except LeaseLost:
            a_outcome.append("lease lost")
        return "from A"

    registry_b = Registry()

    @registry_b.handler("job")
    async def fast(ctx: JobContext) -> str:
        return "from B"

    job = await queue.enqueue("job", max_attempts=3)
    # A's lease is long, so its next heartbeat (lease/3) comes long after this test is over.
    async with running_worker(registry_a, lease_s=30, reap_interval_s=60) as worker_a:
        await asyncio.wait_for(a_started.wait(), 10)
        # A stalls: its lease runs out before it renews (as if its event loop had hung).
        await pool.execute(
            "UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
            job.id,
        )
        no_backoff = RetryPolicy(base_s=0, cap_s=0, jitter=0)
        async with running_worker(registry_b, reap_interval_s=0.05, retry_policy=no_backoff):
            await wait_for(lambda: _done(queue, job.id))
        release_a.set()
        await wait_for(lambda: worker_a.running_job_ids == [])
    final = await queue.get(job.id)
    assert final is not None and final.state == JobState.SUCCEEDED and final.result == "from B"
    assert final.attempts == 2
    assert a_outcome == ["lease lost"]  # A's fenced transaction refused; its result was dropped


async def test_stop_releases_running_jobs_without_spending_an_attempt(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("forever")
    async def forever(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    job = await queue.enqueue("forever")
    t0 = time.monotonic()
    async with running_worker(registry, shutdown_grace_s=0.3):
        await asyncio.wait_for(started.wait(), 10)
    assert time.monotonic() - t0 < 10
    released = await queue.get(job.id)
    assert released is not None and released.state == JobState.QUEUED and released.attempts == 0
    assert released.worker_id is None and released.lease_expires_at is None


async def test_stop_lets_short_jobs_finish_within_the_grace_period(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("short")
    async def short(ctx: JobContext) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    job = await queue.enqueue("short")
    async with running_worker(registry, shutdown_grace_s=10):
        await asyncio.wait_for(started.wait(), 10)
    done = await queue.get(job.id)
    assert done is not None and done.state == JobState.SUCCEEDED and done.result == "finished"


async def test_stalled_hook_fires_when_the_reaper_takes_a_dead_workers_job(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    job = await queue.enqueue("k", max_attempts=3)
    await _claim_short_lease(pool)  # a "worker" that will never heartbeat
    stalled: list[tuple[int, bool]] = []
    async with running_worker(Registry(), queues=["elsewhere"], reap_interval_s=0.05) as worker:
        worker.on("stalled", lambda event: stalled.append((event.job_id, event.will_retry)))
        await wait_for(lambda: stalled)
    assert stalled == [(job.id, True)]


async def test_batched_completion_is_fenced_per_job(queue: Queue, pool: asyncpg.Pool) -> None:
    # One group-commit statement for three jobs: each row is checked against its own token,
    # a null progress keeps what the job had, and a stale token leaves its job untouched.
    await queue.enqueue_many([JobSpec(kind="batched") for _ in range(3)])
    async with pool.acquire() as conn:
        first, second, third = await conn.fetch(
            queries.CLAIM_JOBS, ["default"], 3, "w", 60.0, ALL_KINDS
        )
        await conn.execute(
            queries.SET_PROGRESS, first["id"], first["lease_token"], '{"percent": 40}'
        )
        successes = [
            store.Success(first["id"], first["lease_token"], '{"n": 1}'),
            store.Success(second["id"], second["lease_token"] + 1000, '{"n": 2}'),
            store.Success(third["id"], third["lease_token"], "[3]", '{"percent": 100}'),
        ]
        ids = [first["id"], second["id"], third["id"]]
        written = await store.complete(conn, successes)
    assert written == {first["id"], third["id"]}
    done_first, still_running, done_third = [await queue.get(job_id) for job_id in ids]
    assert done_first is not None and done_first.state == JobState.SUCCEEDED
    assert done_first.result == {"n": 1} and done_first.progress == {"percent": 40}
    assert still_running is not None and still_running.state == JobState.RUNNING
    assert still_running.result is None
    assert done_third is not None and done_third.state == JobState.SUCCEEDED
    assert done_third.result == [3] and done_third.progress == {"percent": 100}
