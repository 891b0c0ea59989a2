"""The queue's admin API on a real Postgres: list_jobs, retry, cancel, pause and resume, the
overview and the per-minute series; a pause honoured by several worker processes at once."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from pgqueue import (
    DoNotRetry,
    JobContext,
    JobNotFound,
    JobSpec,
    JobState,
    JobStateConflict,
    Queue,
    Registry,
    Worker,
    WorkerConfig,
    queries,
)
from tests.support import settings
from tests.support.processes import Processes
from tests.support.wait import wait_for

WORKERS = 3  # worker processes sharing the paused queue
HANDLERS = "tests.acceptance.handlers:registry"


def _registry(fail_first: set[int] | None = None) -> Registry:
    """`ok` succeeds; `bad` fails for good; `flaky` fails for good the first time it runs."""
    registry = Registry()
    seen: set[int] = set()

    @registry.handler("ok")
    async def ok(ctx: JobContext) -> None:
        """Succeeds."""

    @registry.handler("bad")
    async def bad(ctx: JobContext) -> None:
        raise DoNotRetry("bad by design")

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> str:
        if ctx.job.id not in seen:
            seen.add(ctx.job.id)
            raise ValueError("flaky the first time")
        return "fine now"

    return registry


async def _burst(db_url: str, registry: Registry, **options: object) -> None:
    config = WorkerConfig(burst=True, **{**settings.WORKER_OPTIONS, **options})  # type: ignore[arg-type]
    await asyncio.wait_for(Worker(db_url, registry, config).run(), timeout=15)


async def test_list_jobs_filters_and_pages_newest_first(queue: Queue, db_url: str) -> None:
    specs = [JobSpec(kind="ok", payload={"owner": "ann"}) for _ in range(5)]
    specs += [JobSpec(kind="bad", queue="mail", payload={"owner": "bo"}) for _ in range(3)]
    specs += [JobSpec(kind="ok", queue="mail", payload={"owner": "cy"}, delay=timedelta(hours=1))]
    jobs = await queue.enqueue_many(specs)
    await _burst(db_url, _registry(), queues=["default", "mail"])
    ids = [job.id for job in jobs]

    everything = await queue.list_jobs()
    assert [job.id for job in everything] == sorted(ids, reverse=True)
    failed = await queue.list_jobs(state="failed")
    assert [job.id for job in failed] == sorted(ids[5:8], reverse=True)
    assert all("bad by design" in (job.last_error or "") for job in failed)
    assert [j.id for j in await queue.list_jobs(queue="mail", state=JobState.QUEUED)] == [ids[8]]
    assert len(await queue.list_jobs(kind="ok")) == 6
    assert len(await queue.list_jobs(queue="mail", kind="ok", state="succeeded")) == 0
    mine = await queue.list_jobs(payload_match=("owner", ["ann", "cy"]))
    assert {job.id for job in mine} == {*ids[:5], ids[8]}

    # Keyset pages: each starts below the last id of the one before, none overlap or skip.
    pages, before = [], None
    while True:
        page = await queue.list_jobs(limit=4, before=before)
        if not page:
            break
        pages.append([job.id for job in page])
        before = page[-1].id
    assert pages[0] == sorted(ids, reverse=True)[:4]
    assert [i for page in pages for i in page] == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be 1-1000"),
        ({"limit": 1001}, "limit must be 1-1000"),
        ({"before": 0}, "before must be a job id"),
        ({"state": "delayed"}, "state must be one of queued, running"),
        ({"queue": ""}, "queue must be 1-128 characters"),
        ({"payload_match": ("owner", "ann")}, "payload_match is (field, [values])"),
    ],
)
async def test_list_jobs_refuses_bad_filters(
    queue: Queue, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        await queue.list_jobs(**options)  # type: ignore[arg-type]


async def test_retry_gives_a_failed_job_a_fresh_budget_and_it_runs_again(
    queue: Queue, db_url: str
) -> None:
    registry = _registry()
    job = await queue.enqueue("flaky", max_attempts=1)
    await _burst(db_url, registry)
    failed = await queue.get(job.id)
    assert failed is not None and failed.state == JobState.FAILED and failed.attempts == 1

    retried = await queue.retry(job.id)
    assert retried.state == JobState.QUEUED and retried.attempts == 0
    assert retried.finished_at is None and "flaky the first time" in (retried.last_error or "")
    await _burst(db_url, registry)
    done = await queue.get(job.id)
    assert done is not None and done.state == JobState.SUCCEEDED and done.result == "fine now"
    assert done.attempts == 1  # the fresh budget's first attempt

    # A cancelled job can be retried too; a succeeded or queued one cannot.
    cancelled = await queue.cancel((await queue.enqueue("ok")).id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert (await queue.retry(cancelled.id)).state == JobState.QUEUED
    with pytest.raises(JobStateConflict, match="is succeeded") as conflict:
        await queue.retry(job.id)
    assert conflict.value.job is not None and conflict.value.job.state == JobState.SUCCEEDED
    with pytest.raises(JobStateConflict, match="is queued"):
        await queue.retry(cancelled.id)
    with pytest.raises(JobNotFound):
        await queue.retry(10**12)
    unchanged = await queue.get(job.id)
    assert unchanged == done


async def test_cancel_queued_at_once_and_finished_unchanged(queue: Queue, db_url: str) -> None:
    job = await queue.enqueue("ok")
    cancelled = await queue.cancel(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert await queue.cancel(job.id) == cancelled  # finished: returned as it is
    assert await queue.cancel(10**12) is None


async def test_overview_series_and_pause_flags(
    queue: Queue, db_url: str, pool: asyncpg.Pool
) -> None:
    await queue.enqueue_many([JobSpec(kind="ok") for _ in range(4)] + [JobSpec(kind="bad")])
    await _burst(db_url, _registry())
    await queue.enqueue("ok")  # waits: no worker runs now
    await queue.pause("mail")  # a queue with no job at all can be paused beforehand

    overview = {info.queue: info for info in await queue.queues()}
    assert set(overview) == {"default", "mail"}
    default = overview["default"]
    assert not default.paused and default.finished_last_5m == 5
    assert (default.stats.completed, default.stats.failed, default.stats.waiting) == (4, 1, 1)
    assert default.oldest_waiting_s is not None and 0 <= default.oldest_waiting_s < 10
    assert overview["mail"].paused and overview["mail"].oldest_waiting_s is None

    series = await queue.finished_per_minute()
    assert len(series) == 60 and series[0].minute < series[-1].minute
    # The jobs finished a moment ago: in this minute, or the one before when it just turned.
    assert sum(m.succeeded for m in series[-2:]) == 4 and sum(m.failed for m in series) == 1

    # Folding the counters (what maintenance does) keeps the minutes and the totals.
    await queue.purge_finished(
        succeeded_older_than=timedelta(days=1), failed_older_than=timedelta(days=1)
    )
    assert await queue.finished_per_minute() == series
    assert (await queue.stats())["default"].completed == 4
    # A retry takes a job out of the failed count, not out of the minute it failed in.
    (failed,) = await queue.list_jobs(state="failed")
    await queue.retry(failed.id)
    assert (await queue.stats())["default"].failed == 0
    assert await queue.finished_per_minute() == series

    resumed = await queue.resume("mail")
    assert not resumed.paused and resumed.queue == "mail"
    assert (await queue.pause("default")).paused
    assert (await queue.pause("default")).paused  # pausing twice is a no-op
    with pytest.raises(ValueError, match="1-128"):
        await queue.pause("")
    with pytest.raises(ValueError, match="minutes must be 1-60"):
        await queue.finished_per_minute(minutes=61)
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.paused_queues") == 1


async def test_a_pause_holds_across_several_worker_processes(
    queue: Queue, db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await pool.execute("CREATE TABLE effects (job_id bigint NOT NULL, worker_id text NOT NULL)")
    await queue.pause("default")
    held = await queue.enqueue_many([JobSpec(kind="noop") for _ in range(30)])
    processes = Processes(tmp_path / "logs")
    env = {"DATABASE_URL": db_url, **settings.WORKER_ENV}
    try:
        for _ in range(WORKERS):
            processes.worker(HANDLERS, "--queue", "default", "--queue", "other", env=env)
        # Work in the other queue, enqueued after the paused queue's jobs (which the claim
        # would take first): once all of it is done by several workers, each of them has
        # claimed past the paused queue many times over.
        probes = await queue.enqueue_many(
            [JobSpec(kind="effect", queue="other") for _ in range(60)]
        )

        async def probes_done() -> bool:
            for process in processes.started:
                process.check_alive()
            done = await pool.fetchval(
                "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'other' AND state = 'succeeded'"
            )
            return bool(done == len(probes))

        await wait_for(probes_done, timeout=30, message="the other queue's jobs done")
        workers = await pool.fetchval("SELECT count(DISTINCT worker_id) FROM effects")
        assert workers >= 2, "several workers took part"
        untouched = await pool.fetch(
            "SELECT state, attempts FROM pgqueue.jobs WHERE id = ANY($1::bigint[])",
            [job.id for job in held],
        )
        assert {(r["state"], r["attempts"]) for r in untouched} == {("queued", 0)}

        # Resumed: the workers are woken (not left to their poll) and run it all.
        await queue.resume("default")

        async def held_done() -> bool:
            rows = await queue.list_jobs(queue="default", state="succeeded", limit=100)
            return len(rows) == len(held)

        await wait_for(held_done, timeout=20, message="the resumed queue's jobs done")
        ran_on = await pool.fetchval(
            "SELECT count(DISTINCT worker_id) FROM pgqueue.jobs WHERE queue = 'default'"
        )
        assert ran_on >= 1
    finally:
        for process in processes.started:
            process.stop()
        processes.close()


async def test_pausing_mid_run_lets_running_jobs_finish_and_starts_no_more(
    queue: Queue, db_url: str, pool: asyncpg.Pool
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    registry = Registry()

    @registry.handler("slow")
    async def slow(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    jobs = await queue.enqueue_many([JobSpec(kind="slow") for _ in range(6)])
    config = WorkerConfig(concurrency=2, **settings.WORKER_OPTIONS)
    worker = Worker(db_url, registry, config)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        await queue.pause("default")
        release.set()  # the two running jobs end; their slots must not take new ones

        async def two_finished() -> bool:
            rows = await queue.list_jobs(state="succeeded")
            return len(rows) == 2

        await wait_for(two_finished, timeout=10, message="the running jobs finished")
        # The completer's fused claim ran with those successes and took nothing: still 4.
        assert len(await queue.list_jobs(state="queued")) == 4
        assert await pool.fetchval(queries.COUNT_WAITING, ["default"]) == 4
        await queue.resume("default")
        await wait_for(
            lambda: _all_succeeded(queue, len(jobs)), timeout=10, message="all done after resume"
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=15)


async def _all_succeeded(queue: Queue, count: int) -> bool:
    return len(await queue.list_jobs(state="succeeded")) == count
