"""The worker in one process: outcomes, retries, timeouts, progress, cancellation, hooks."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import asyncpg
import pytest

from pgqueue import DoNotRetry, Event, JobContext, JobSpec, JobState, Queue, Registry, RetryLater
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for


async def state_of(queue: Queue, job_id: int) -> JobState:
    job = await queue.get(job_id)
    assert job is not None
    return job.state


async def has_state(queue: Queue, job_id: int, state: JobState) -> bool:
    return await state_of(queue, job_id) == state


async def test_runs_jobs_and_stores_results(queue: Queue, running_worker: WorkerFactory) -> None:
    registry = Registry()

    @registry.handler("add")
    async def add(ctx: JobContext) -> int:
        return int(ctx.payload["a"] + ctx.payload["b"])

    jobs = await queue.enqueue_many(
        [JobSpec(kind="add", payload={"a": i, "b": 1}) for i in range(10)]
    )
    async with running_worker(registry):
        for job in jobs:
            await wait_for(lambda j=job: has_state(queue, j.id, JobState.SUCCEEDED))  # type: ignore[misc]
    for job in jobs:
        done = await queue.get(job.id)
        assert done is not None
        assert done.result == job.payload["a"] + 1
        assert done.attempts == 1 and done.finished_at is not None and done.lease_expires_at is None


async def _terminal(queue: Queue, job_id: int) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state.is_terminal


async def test_failures_retry_with_backoff_then_fail(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    calls: list[int] = []

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError(f"upstream broke on attempt {ctx.attempt}")

    job = await queue.enqueue("flaky", max_attempts=3)
    async with running_worker(registry):
        await wait_for(lambda: _terminal(queue, job.id))
    failed = await queue.get(job.id)
    assert failed is not None
    assert failed.state == JobState.FAILED and failed.attempts == 3 and calls == [1, 2, 3]
    assert "upstream broke on attempt 3" in (failed.last_error or "")
    assert "Traceback" in (failed.last_error or "")


async def test_retry_later_waits_the_given_delay(
    queue: Queue, running_worker: WorkerFactory, pool: asyncpg.Pool
) -> None:
    registry = Registry()

    @registry.handler("limited")
    async def limited(ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise RetryLater("429 from upstream", delay_s=600)
        return "ok"

    job = await queue.enqueue("limited")
    async with running_worker(registry):
        await wait_for(
            lambda: pool.fetchval(
                "SELECT attempts = 1 AND state = 'queued' FROM pgqueue.jobs WHERE id = $1", job.id
            )
        )
    wait_s = await pool.fetchval(
        "SELECT extract(epoch FROM run_at - now()) FROM pgqueue.jobs WHERE id = $1", job.id
    )
    assert 590 < wait_s <= 600
    requeued = await queue.get(job.id)
    assert requeued is not None and "429 from upstream" in (requeued.last_error or "")


async def test_do_not_retry_fails_at_once(queue: Queue, running_worker: WorkerFactory) -> None:
    registry = Registry()

    @registry.handler("refused")
    async def refused(ctx: JobContext) -> None:
        raise DoNotRetry("content policy violation")

    job = await queue.enqueue("refused", max_attempts=5)
    async with running_worker(registry):
        await wait_for(lambda: _terminal(queue, job.id))
    failed = await queue.get(job.id)
    assert failed is not None and failed.state == JobState.FAILED and failed.attempts == 1
    assert failed.last_error == "DoNotRetry: content policy violation"


async def test_a_kind_the_worker_does_not_know_waits_for_a_worker_that_does(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    # A rolling deploy: an old worker must leave the new kind alone, not fail it.
    old, new = Registry(), Registry()

    @old.handler("known")
    async def known(ctx: JobContext) -> str:
        return "old"

    @new.handler("new.kind")
    async def new_kind(ctx: JobContext) -> str:
        return "new"

    unknown = await queue.enqueue("new.kind")
    other = await queue.enqueue("known")
    async with running_worker(old) as worker:
        await wait_for(lambda: _terminal(queue, other.id))
        await wait_for(worker.idle.is_set)  # it looked, and found nothing it can run
        waiting = await queue.get(unknown.id)
        assert waiting is not None and waiting.state == JobState.QUEUED
        assert waiting.attempts == 0 and waiting.last_error is None
    async with running_worker(new):
        await wait_for(lambda: _terminal(queue, unknown.id))
    done = await queue.get(unknown.id)
    assert done is not None and done.state == JobState.SUCCEEDED and done.result == "new"


async def test_timeout_cancels_the_handler_and_counts_an_attempt(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    cancelled: list[int] = []

    @registry.handler("slow")
    async def slow(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    job = await queue.enqueue("slow", timeout=timedelta(seconds=0.2), max_attempts=2)
    async with running_worker(registry):
        await wait_for(lambda: _terminal(queue, job.id))
    failed = await queue.get(job.id)
    assert failed is not None and failed.state == JobState.FAILED and failed.attempts == 2
    assert "timed out after 0.2s" in (failed.last_error or "") and cancelled == [1, 2]


async def test_progress_is_recorded_and_throttled(
    queue: Queue, running_worker: WorkerFactory, pool: asyncpg.Pool
) -> None:
    registry = Registry()
    release = asyncio.Event()

    @registry.handler("chatty")
    async def chatty(ctx: JobContext) -> None:
        for i in range(1000):
            await ctx.progress(i / 10, f"step {i}", completed=i, total=1000)
        await release.wait()

    job = await queue.enqueue("chatty")
    writes: list[int] = []
    async with running_worker(registry, progress_interval_s=60.0) as worker:
        worker.on("progress", lambda event: writes.append(1))
        await wait_for(
            lambda: pool.fetchval(
                "SELECT progress IS NOT NULL FROM pgqueue.jobs WHERE id = $1", job.id
            )
        )
        first = json.loads(
            await pool.fetchval("SELECT progress FROM pgqueue.jobs WHERE id = $1", job.id)
        )
        assert first == {"percent": 0, "message": "step 0", "completed": 0, "total": 1000}
        release.set()
        await wait_for(lambda: _terminal(queue, job.id))
    done = await queue.get(job.id)
    # Only the first update was written at once; the last one lands with the final state.
    assert (
        done is not None and done.progress["completed"] == 999 and done.progress["percent"] == 99.9
    )
    assert len(writes) == 1000  # every update reached the progress hook


async def test_cancel_a_queued_job(queue: Queue) -> None:
    job = await queue.enqueue("k", delay=timedelta(hours=1))
    cancelled = await queue.cancel(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED and cancelled.finished_at
    again = await queue.cancel(job.id)
    assert again is not None and again.state == JobState.CANCELLED
    assert await queue.cancel(10**12) is None


async def test_cancel_a_running_job_stops_its_handler(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    started = asyncio.Event()
    stopped = asyncio.Event()

    @registry.handler("long")
    async def long(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    job = await queue.enqueue("long")
    async with running_worker(registry, lease_s=0.6):
        await asyncio.wait_for(started.wait(), 10)
        flagged = await queue.cancel(job.id)
        assert (
            flagged is not None
            and flagged.state == JobState.RUNNING
            and flagged.cancel_requested_at
        )
        await asyncio.wait_for(stopped.wait(), 10)  # within a heartbeat (lease/3)
        await wait_for(lambda: has_state(queue, job.id, JobState.CANCELLED))


async def test_hooks_see_active_completed_and_failed(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("ok")
    async def ok(ctx: JobContext) -> str:
        return "fine"

    @registry.handler("bad")
    async def bad(ctx: JobContext) -> None:
        raise DoNotRetry("nope")

    seen: list[tuple[str, int]] = []

    async def record(event: Event) -> None:
        seen.append((event.name, event.job_id))

    def broken_hook(event: Event) -> None:
        raise RuntimeError("a hook bug must not fail the job")

    good = await queue.enqueue("ok")
    failing = await queue.enqueue("bad")
    async with running_worker(registry) as worker:
        for name in ("active", "completed", "failed"):
            worker.on(name, record)  # type: ignore[arg-type]
        worker.on("completed", broken_hook)
        await wait_for(lambda: _terminal(queue, good.id))
        await wait_for(lambda: _terminal(queue, failing.id))
        await wait_for(lambda: len(seen) >= 4)
    assert sorted(seen) == sorted(
        [
            ("active", good.id),
            ("completed", good.id),
            ("active", failing.id),
            ("failed", failing.id),
        ]
    )
    assert await state_of(queue, good.id) == JobState.SUCCEEDED


async def test_logs_start_completion_and_failure(
    queue: Queue, running_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()

    @registry.handler("ok")
    async def ok(ctx: JobContext) -> None:
        return None

    @registry.handler("bad")
    async def bad(ctx: JobContext) -> None:
        raise ValueError("broken input")

    caplog.set_level(logging.INFO, logger="pgqueue")
    good = await queue.enqueue("ok")
    failing = await queue.enqueue("bad", max_attempts=1)
    async with running_worker(registry):
        await wait_for(lambda: _terminal(queue, good.id))
        await wait_for(lambda: _terminal(queue, failing.id))
    by_action = {getattr(r, "action", None): r for r in caplog.records}
    assert by_action["job_started"].job_id in (good.id, failing.id)  # type: ignore[attr-defined]
    succeeded = by_action["job_succeeded"]
    assert succeeded.job_id == good.id and succeeded.attempt == 1 and succeeded.duration_s >= 0  # type: ignore[attr-defined]
    failed = by_action["job_failed"]
    assert failed.job_id == failing.id and "ValueError: broken input" in failed.error  # type: ignore[attr-defined]
    assert "Traceback" in failed.error and failed.will_retry is False  # type: ignore[attr-defined]


async def test_backlog_warning(
    queue: Queue, running_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgqueue")
    registry = Registry()
    release = asyncio.Event()

    @registry.handler("k")
    async def blocked(ctx: JobContext) -> None:
        await release.wait()

    def warned() -> bool:
        return any(getattr(r, "action", "") == "backlog" for r in caplog.records)

    await queue.enqueue_many([JobSpec(kind="k", queue="backlogged") for _ in range(20)])
    async with running_worker(registry, queues=["other"], backlog_warn=10):
        await asyncio.sleep(0.2)  # a worker of another queue has no backlog to report
    assert not warned()
    # One slot, held: at least 19 of the 20 stay runnable, so every check sees them.
    async with running_worker(registry, queues=["backlogged"], backlog_warn=10, concurrency=1):
        await wait_for(warned)
        release.set()


async def test_registry_hooks_reach_every_worker_of_the_registry(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    failures: list[tuple[int, bool]] = []

    @registry.handler("bad")
    async def bad(ctx: JobContext) -> None:
        raise DoNotRetry("no")

    registry.on("failed", lambda event: failures.append((event.job_id, event.will_retry)))
    job = await queue.enqueue("bad")
    async with running_worker(registry):
        await wait_for(lambda: failures)
    assert failures == [(job.id, False)]


async def test_synchronous_commit_can_be_turned_off_for_the_workers_connections(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("show")
    async def show(ctx: JobContext) -> str:
        async with ctx.transaction() as conn:
            setting: str = await conn.fetchval("SHOW synchronous_commit")
        return setting

    job = await queue.enqueue("show")
    async with running_worker(registry, synchronous_commit=False):
        await wait_for(lambda: _terminal(queue, job.id))
    done = await queue.get(job.id)
    assert done is not None and done.result == "off"


async def test_a_result_that_is_not_json_fails_its_job_alone(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # NaN is not JSON: the job fails at once with a readable error, and the jobs completed in
    # the same batched write are not dragged down with it.
    registry = Registry()

    @registry.handler("nan")
    async def nan(ctx: JobContext) -> float:
        return float("nan")

    @registry.handler("fine")
    async def fine(ctx: JobContext) -> int:
        return 1

    bad = await queue.enqueue("nan")
    good = await queue.enqueue_many([JobSpec(kind="fine") for _ in range(5)])
    async with running_worker(registry, concurrency=6):
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 6 FROM pgqueue.jobs WHERE finished_at IS NOT NULL"
            )
        )
    failed = await queue.get(bad.id)
    assert failed is not None and failed.state == JobState.FAILED and failed.attempts == 1
    assert "not JSON" in (failed.last_error or "")
    for job in good:
        done = await queue.get(job.id)
        assert done is not None and done.state == JobState.SUCCEEDED and done.result == 1
