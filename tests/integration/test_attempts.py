"""A job's attempt history (schema v12): every attempt's worker, times, outcome and error, kept
beside the job; a succeeded job shows no current error."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg

from pgqueue import JobContext, JobState, Queue, Registry, store
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for


async def _reaches(queue: Queue, job_id: int, state: JobState) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state is state


async def test_a_job_that_failed_twice_then_succeeded_keeps_both_errors_in_its_history(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> str:
        if ctx.attempt <= 2:
            raise RuntimeError(f"boom on attempt {ctx.attempt}")
        return "done"

    job = await queue.enqueue("flaky", {}, max_attempts=5)
    async with running_worker(registry) as worker:
        await wait_for(lambda: _reaches(queue, job.id, JobState.SUCCEEDED), timeout=20)
    done = await queue.get(job.id)
    assert done is not None and done.attempts == 3
    assert done.last_error is None  # the earlier errors are history, not the current state
    attempts = await queue.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [
        (1, "retried"),
        (2, "retried"),
        (3, "succeeded"),
    ]
    assert attempts[0].error is not None and "boom on attempt 1" in attempts[0].error
    assert attempts[1].error is not None and "boom on attempt 2" in attempts[1].error
    assert attempts[2].error is None
    for attempt in attempts:
        assert attempt.worker_id == worker.worker_id
        assert attempt.started_at is not None and attempt.finished_at is not None
        assert attempt.duration_s is not None and attempt.duration_s >= 0
    # Oldest first, each starting after the one before it ended.
    for earlier, later in itertools.pairwise(attempts):
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at


async def test_a_success_in_the_handlers_own_transaction_is_recorded_with_it(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("atomic")
    async def atomic(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("not yet")
        async with ctx.transaction() as conn:
            await ctx.complete_in(conn, {"done": True})

    job = await queue.enqueue("atomic", {})
    async with running_worker(registry) as worker:
        await wait_for(lambda: _reaches(queue, job.id, JobState.SUCCEEDED), timeout=20)
    done = await queue.get(job.id)
    assert done is not None and done.last_error is None and done.result == {"done": True}
    attempts = await queue.attempts(job.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in attempts] == [
        (1, "retried", worker.worker_id),
        (2, "succeeded", worker.worker_id),
    ]


async def test_a_job_that_fails_for_good_ends_its_history_failed(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("broken")
    async def broken(ctx: JobContext) -> None:
        raise ValueError(f"bad input, attempt {ctx.attempt}")

    job = await queue.enqueue("broken", {}, max_attempts=2)
    async with running_worker(registry):
        await wait_for(lambda: _reaches(queue, job.id, JobState.FAILED), timeout=20)
    failed = await queue.get(job.id)
    assert failed is not None and failed.last_error is not None
    attempts = await queue.attempts(job.id)
    assert [a.outcome for a in attempts] == ["retried", "failed"]
    assert attempts[-1].error == failed.last_error


async def test_an_expired_lease_is_an_attempt_of_the_worker_that_lost_it(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("work")
    async def work(ctx: JobContext) -> str:
        return "done"

    job = await queue.enqueue("work", {})
    # A worker that claims the job and dies: its lease runs out, the reaper moves the job on.
    request = store.ClaimRequest(["default"], ["work"], 1, "gone-worker", lease_s=0.2)
    (claimed,) = await store.claim(pool, request)
    assert claimed.id == job.id
    running = await queue.attempts(job.id)
    assert [(a.outcome, a.worker_id, a.finished_at) for a in running] == [
        ("running", "gone-worker", None)
    ]
    async with running_worker(registry) as worker:
        await wait_for(lambda: _reaches(queue, job.id, JobState.SUCCEEDED), timeout=20)
    attempts = await queue.attempts(job.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in attempts] == [
        (1, "retried", "gone-worker"),
        (2, "succeeded", worker.worker_id),
    ]
    assert attempts[0].error is not None and "lease expired" in attempts[0].error


async def test_a_cancelled_running_job_ends_its_attempt_cancelled(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("block")
    async def block(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.enqueue("block", {})
    async with running_worker(registry):
        await asyncio.wait_for(started.wait(), timeout=10)
        await queue.cancel(job.id)
        await wait_for(lambda: _reaches(queue, job.id, JobState.CANCELLED), timeout=20)
    (attempt,) = await queue.attempts(job.id)
    assert attempt.outcome == "cancelled" and attempt.finished_at is not None


async def test_the_history_goes_with_its_job(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first try")

    jobs = [await queue.enqueue("flaky", {}) for _ in range(3)]
    async with running_worker(registry):
        for job in jobs:
            await wait_for(lambda j=job: _reaches(queue, j.id, JobState.SUCCEEDED), timeout=20)  # type: ignore[misc]
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.attempts") == 6
    # Retention (or any DELETE) takes a job's attempts with it ...
    deleted = await store.purge_older_than(pool, [JobState.SUCCEEDED], 0)
    assert deleted == 3
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.attempts") == 0
    # ... and so does a TRUNCATE, so that ids restarted never inherit an old job's history.
    again = await queue.enqueue("flaky", {})
    async with running_worker(registry):
        await wait_for(lambda: _reaches(queue, again.id, JobState.SUCCEEDED), timeout=20)
    await pool.execute("TRUNCATE pgqueue.jobs RESTART IDENTITY")
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.attempts") == 0
