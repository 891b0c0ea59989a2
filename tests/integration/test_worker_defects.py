"""The worker defects found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import math

import asyncpg
import pytest

from pgqueue import (
    Event,
    JobCancelled,
    JobContext,
    JobState,
    Queue,
    QueueSettings,
    Registry,
    RetryLater,
    RetryPolicy,
)
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for


async def _state(queue: Queue, job_id: int) -> JobState | None:
    job = await queue.get(job_id)
    return job.state if job else None


async def _lock_waiters(pool: asyncpg.Pool) -> int:
    """Backends of this database waiting for a row lock."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return count


async def test_a_success_handed_off_before_shutdown_is_written_not_reaped(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # Defect 1: when the grace period ended, the completer was cancelled with the success
    # still pending; the job stayed `running` under a live lease, to be reaped at the cost of
    # an attempt. The completer's write is slowed here by a row lock the test holds for 1 s.
    registry = Registry()
    started, go = asyncio.Event(), asyncio.Event()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> str:
        started.set()
        await go.wait()
        return "done"

    job = await queue.enqueue("k")
    async with running_worker(registry, shutdown_grace_s=0.3) as worker:
        await asyncio.wait_for(started.wait(), 10)
        async with pool.acquire() as blocker, blocker.transaction():
            await blocker.execute("SELECT 1 FROM pgqueue.jobs WHERE id = $1 FOR UPDATE", job.id)
            go.set()
            await wait_for(lambda: _lock_waiters(pool))  # the success's write waits on us
            worker.stop()
            await asyncio.sleep(1.0)  # the slow write outlasts the 0.3 s grace period
    done = await queue.get(job.id)
    assert done is not None and done.state == JobState.SUCCEEDED, done
    assert done.attempts == 1 and done.result == "done"


async def test_a_cancel_requested_while_running_survives_a_failed_attempt(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Defect 2: FAIL_ATTEMPT requeued a job whose cancel was requested, and it ran again.
    registry = Registry()
    started, go = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        started.set()
        await go.wait()
        raise RuntimeError("upstream broke")

    job = await queue.enqueue("k", max_attempts=3)
    # A 30 s lease: the heartbeat (every 10 s) does not learn of the cancel before the failure.
    async with running_worker(registry, lease_s=30):
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(job.id)
        go.set()
        await wait_for(lambda: _terminal_state(queue, job.id))
    cancelled = await queue.get(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert runs == [1]


async def _terminal_state(queue: Queue, job_id: int) -> bool:
    state = await _state(queue, job_id)
    return state is not None and state.is_terminal


async def test_a_cancel_requested_while_running_survives_a_release_at_shutdown(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Defect 2, the other way back to the queue: RELEASE_JOBS at shutdown requeued it.
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.enqueue("k")
    async with running_worker(registry, lease_s=30, shutdown_grace_s=0):
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(job.id)
    cancelled = await queue.get(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert cancelled.finished_at is not None


async def test_one_handlers_open_transaction_does_not_stall_the_other_leases(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Defect 3: the batched renewal waited on the row lock a handler's ctx.transaction() held,
    # so every other job on the worker went unrenewed and lost its lease.
    registry = Registry()
    stalled: list[int] = []

    @registry.handler("holds.lock")
    async def holds_lock(ctx: JobContext) -> str:
        async with ctx.transaction() as conn:
            await conn.execute("SELECT 1")
            await asyncio.sleep(2.5)  # longer than the 1.2 s lease
        return "held"

    @registry.handler("plain")
    async def plain(ctx: JobContext) -> str:
        await asyncio.sleep(2.5)
        return "plain"

    registry.on("stalled", lambda event: stalled.append(event.job_id))
    # The locked job first: the renewal visits rows in id order.
    locked = await queue.enqueue("holds.lock")
    other = await queue.enqueue("plain")
    async with running_worker(registry, lease_s=1.2, reap_interval_s=0.1):
        await wait_for(lambda: _terminal_state(queue, other.id), timeout=15)
        await wait_for(lambda: _terminal_state(queue, locked.id), timeout=15)
    for job_id, result in ((locked.id, "held"), (other.id, "plain")):
        job = await queue.get(job_id)
        assert job is not None and job.state == JobState.SUCCEEDED, job
        assert job.attempts == 1 and job.result == result
    assert stalled == []


@pytest.mark.parametrize("delay_s", [math.inf, -math.inf, math.nan, -1.0])
def test_retry_later_refuses_delays_that_are_not_finite_and_positive(delay_s: float) -> None:
    # Defect 4: inf and NaN were accepted and reached the database.
    with pytest.raises(ValueError, match="finite number of seconds"):
        RetryLater("busy", delay_s=delay_s)


def test_retry_delays_are_capped_at_a_year() -> None:
    assert RetryLater("busy", delay_s=1e12).delay_s == 365 * 86400.0
    with pytest.raises(ValueError, match="at most"):
        RetryPolicy(base_s=1, cap_s=1e12)
    with pytest.raises(ValueError):
        QueueSettings(retry_cap_s=1e12)


async def test_a_huge_retry_delay_leaves_a_job_that_can_still_be_read(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Defect 4: RetryLater(delay_s=1e12) committed a run_at in year 33715, which asyncpg
    # cannot decode, and Queue.get raised from then on.
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        raise RetryLater("come back much later", delay_s=1e12)

    job = await queue.enqueue("k")
    async with running_worker(registry):
        await wait_for(lambda: _retried(queue, job.id))
    later = await queue.get(job.id)
    assert later is not None and later.state == JobState.QUEUED
    assert later.run_at.year <= later.created_at.year + 1


async def _retried(queue: Queue, job_id: int) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.attempts == 1 and job.state == JobState.QUEUED


async def test_a_success_written_during_a_renewal_keeps_its_completed_hook(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # Defect 5: a renewal in flight while a success was written read the job as lost, and
    # cancelled its task, completed hook and all. Here a renewal is held up (by the first
    # job's open transaction, on code that waits for it) while the second job succeeds.
    registry = Registry()
    in_transaction, release, go, hook_go = (asyncio.Event() for _ in range(4))
    completed: list[int] = []

    @registry.handler("holds.lock")
    async def holds_lock(ctx: JobContext) -> None:
        async with ctx.transaction():
            in_transaction.set()
            await release.wait()

    @registry.handler("quick")
    async def quick(ctx: JobContext) -> str:
        await go.wait()
        return "quick"

    async def on_completed(event: Event) -> None:
        if event.job is not None and event.job.kind == "quick":
            await hook_go.wait()
            completed.append(event.job_id)

    registry.on("completed", on_completed)
    first = await queue.enqueue("holds.lock")
    second = await queue.enqueue("quick")
    async with running_worker(registry, lease_s=1.5):
        await asyncio.wait_for(in_transaction.wait(), 10)
        # On the old code a renewal now waits behind the transaction; on the new one none
        # ever waits, and this finds nobody waiting.
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: _lock_waiters(pool), timeout=1.5)
        go.set()
        await wait_for(lambda: _terminal_state(queue, second.id))
        release.set()  # the held-up renewal goes on, and finds the second job succeeded
        await wait_for(lambda: _no_lock_waiters(pool))
        # The first job's success can only be written once that renewal committed (it held
        # the row): by then its answer has reached the worker, and the hook may go on.
        await wait_for(lambda: _terminal_state(queue, first.id))
        hook_go.set()
        await wait_for(lambda: completed, message="the completed hook ran to its end")
    assert completed == [second.id]


async def _no_lock_waiters(pool: asyncpg.Pool) -> bool:
    return await _lock_waiters(pool) == 0


async def test_a_freed_concurrency_slot_wakes_an_idle_worker(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Defect 6: a worker whose candidates were all at their key's limit slept until its next
    # poll when another worker freed a slot of that key. Worker A (one slot, queues q1 and q2)
    # runs the key's only allowed job; B (queue q1) finds the key's next job blocked and goes
    # idle. A's completion claims the q2 job, not the freed key's (its claim sees the count
    # from before the completion), so only B can run it, and only if something wakes it.
    registry = Registry()
    release = {"q1": asyncio.Event(), "q2": asyncio.Event()}

    @registry.handler("hold")
    async def hold(ctx: JobContext) -> None:
        await release[ctx.job.queue].wait()

    @registry.handler("quick")
    async def quick(ctx: JobContext) -> None:
        return None

    key = {"concurrency_key": "project", "concurrency_limit": 1}
    first = await queue.enqueue("hold", queue="q1", **key)
    slow_polls = {"poll_interval_s": 30.0, "concurrency": 1}
    async with running_worker(registry, queues=["q1", "q2"], worker_id="a", **slow_polls):
        await wait_for(lambda: _is(queue, first.id, JobState.RUNNING))
        second = await queue.enqueue("quick", queue="q1", **key)
        other = await queue.enqueue("hold", queue="q2")
        async with running_worker(
            registry, queues=["q1"], worker_id="b", **slow_polls
        ) as idle_worker:
            await wait_for(idle_worker.idle.is_set)
            release["q1"].set()
            await wait_for(lambda: _is(queue, second.id, JobState.SUCCEEDED), timeout=5)
            other_job = await queue.get(other.id)
            assert other_job is not None and other_job.worker_id == "a", "A took the q2 job"
        release["q2"].set()


async def _is(queue: Queue, job_id: int, state: JobState) -> bool:
    return await _state(queue, job_id) == state


async def test_a_retry_starts_at_its_run_at_not_at_the_next_poll(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # A RetryLater(delay_s=0.5) and a short backoff each ran about 2.5 s late with a 3 s poll:
    # an idle worker now sleeps until the earliest due run_at of its queues.
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise RetryLater("not yet", delay_s=0.5)
        return ctx.attempt

    job = await queue.enqueue("k")
    async with running_worker(registry, poll_interval_s=30.0):
        await wait_for(lambda: _is(queue, job.id, JobState.SUCCEEDED), timeout=5)
    done = await queue.get(job.id)
    assert done is not None and done.result == 2


async def test_progress_raises_job_cancelled_once_a_cancel_is_requested(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # JobCancelled used to be exported and never raised.
    registry = Registry()
    started = asyncio.Event()
    seen: list[str] = []

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        started.set()
        try:
            while True:
                await ctx.progress(message="working")
                await asyncio.sleep(0.05)
        except JobCancelled:
            seen.append("JobCancelled")
            raise

    job = await queue.enqueue("k")
    async with running_worker(registry, lease_s=30):  # no heartbeat before the progress call
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(job.id)
        await wait_for(lambda: _is(queue, job.id, JobState.CANCELLED))
    assert seen == ["JobCancelled"]


async def test_the_completed_hook_receives_the_result_complete_in_stored(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    results: list[object] = []

    @registry.handler("k")
    async def handler(ctx: JobContext) -> str:
        async with ctx.transaction() as conn:
            await ctx.complete_in(conn, {"stored": True})
        return "ignored"

    registry.on("completed", lambda event: results.append(event.result))
    job = await queue.enqueue("k")
    async with running_worker(registry):
        await wait_for(lambda: results)
    done = await queue.get(job.id)
    assert done is not None and done.result == {"stored": True}
    assert results == [{"stored": True}]


async def test_a_cancel_that_ends_a_running_job_reaches_the_failed_hooks(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # Hooks that record a job's end for good (the service's) hear of a cancel too.
    registry = Registry()
    started = asyncio.Event()
    ends: list[tuple[JobState, bool, str]] = []

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    def on_failed(event: Event) -> None:
        assert event.job is not None
        ends.append((event.job.state, event.will_retry, type(event.error).__name__))

    registry.on("failed", on_failed)
    job = await queue.enqueue("k")
    async with running_worker(registry, lease_s=0.6):  # a heartbeat every 0.2 s
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(job.id)
        await wait_for(lambda: ends)
    assert ends == [(JobState.CANCELLED, False, "JobCancelled")]
