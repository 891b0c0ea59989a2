"""What enqueue promises about wake-ups and concurrent callers (schema v4: no NOTIFY trigger).

Every worker here polls every 30 s, so a job started within a second was woken by a NOTIFY.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from pgqueue import JobContext, JobSpec, Queue, Registry, Worker
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

SLOW_POLL_S = 30.0
PROMPT_S = 1.0  # far below the poll: only a notification explains a start this soon


def _timing_registry(started: dict[int, float]) -> Registry:
    registry = Registry()

    @registry.handler("timed")
    async def timed(ctx: JobContext) -> None:
        started[ctx.job.id] = time.monotonic()

    return registry


async def _idle(worker: Worker) -> None:
    # Listening, and its first (empty) claim over: it waits for a wake-up with its slots free.
    await wait_for(lambda: worker.listener_pid is not None and worker.idle.is_set())


async def test_autocommit_enqueue_on_a_connection_wakes_a_worker(
    db_url: str, running_worker: WorkerFactory
) -> None:
    started: dict[int, float] = {}
    conn = await asyncpg.connect(db_url)
    try:
        async with running_worker(_timing_registry(started), poll_interval_s=SLOW_POLL_S) as w:
            await _idle(w)
            enqueued = time.monotonic()
            job = await Queue(conn).enqueue("timed")
            await wait_for(lambda: job.id in started, timeout=5)
    finally:
        await conn.close()
    assert started[job.id] - enqueued < PROMPT_S


async def test_transactional_enqueue_wakes_a_worker_when_the_caller_commits(
    db_url: str, running_worker: WorkerFactory
) -> None:
    started: dict[int, float] = {}
    conn = await asyncpg.connect(db_url)
    try:
        async with running_worker(_timing_registry(started), poll_interval_s=SLOW_POLL_S) as w:
            await _idle(w)
            async with conn.transaction():
                job = await Queue(conn).enqueue("timed")
                await asyncio.sleep(0.3)  # the job is not visible yet: nothing may start it
                assert job.id not in started
                committed = time.monotonic()
            await wait_for(lambda: job.id in started, timeout=5)
    finally:
        await conn.close()
    assert started[job.id] - committed < PROMPT_S


async def test_a_rolled_back_enqueue_leaves_no_job_and_wakes_nobody(
    db_url: str, pool: asyncpg.Pool
) -> None:
    listener = await asyncpg.connect(db_url)
    heard: list[str] = []
    await listener.add_listener("pgqueue_jobs", lambda *args: heard.append(args[3]))
    conn = await asyncpg.connect(db_url)
    try:
        tx = conn.transaction()
        await tx.start()
        job = await Queue(conn).enqueue("timed", queue="rolled-back")
        await tx.rollback()
        await Queue(pool).enqueue("timed", queue="sentinel")  # notifications arrive in order
        await wait_for(lambda: "sentinel" in heard, timeout=5)
    finally:
        await conn.close()
        await listener.close()
    assert "rolled-back" not in heard
    assert await Queue(pool).get(job.id) is None


async def test_fifty_concurrent_enqueuers_all_get_their_jobs_run_promptly(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    started: dict[int, float] = {}
    async with running_worker(
        _timing_registry(started), poll_interval_s=SLOW_POLL_S, concurrency=10
    ) as w:
        await _idle(w)
        enqueued = time.monotonic()
        jobs = await asyncio.gather(*(queue.enqueue("timed", {"n": n}) for n in range(50)))
        await wait_for(lambda: len(started) == 50, timeout=10)
    assert len({job.id for job in jobs}) == 50
    assert [job.payload for job in jobs] == [{"n": n} for n in range(50)]
    assert set(started) == {job.id for job in jobs}
    assert max(started.values()) - enqueued < 5 * PROMPT_S


async def test_concurrent_enqueues_share_their_notifications(db_url: str, queue: Queue) -> None:
    listener = await asyncpg.connect(db_url)
    heard: list[str] = []
    await listener.add_listener("pgqueue_jobs", lambda *args: heard.append(args[3]))
    try:
        await asyncio.gather(*(queue.enqueue("timed", queue="shared") for _ in range(200)))
        await queue.enqueue("timed", queue="sentinel")  # notifications arrive in order
        await wait_for(lambda: "sentinel" in heard, timeout=5)
    finally:
        await listener.close()
    # At least one wake-up, and far fewer than one per job: they were coalesced.
    assert 1 <= heard.count("shared") < 100


async def test_one_failing_request_fails_alone_among_concurrent_enqueues(queue: Queue) -> None:
    # jsonb refuses a NUL character: Postgres rejects the grouped statement, and each
    # request then runs alone, so only the one at fault sees the error.
    payloads: list[object] = [{"n": n} for n in range(20)]
    payloads[7] = {"bad": "\x00"}
    results = await asyncio.gather(
        *(queue.enqueue("timed", payload) for payload in payloads), return_exceptions=True
    )
    assert isinstance(results[7], asyncpg.PostgresError)
    fine = [r for i, r in enumerate(results) if i != 7]
    assert all(not isinstance(r, BaseException) for r in fine)
    for result in fine:
        assert not isinstance(result, BaseException)
        stored = await queue.get(result.id)
        assert stored is not None and stored.payload == result.payload


async def test_a_payload_that_is_not_json_fails_only_its_caller(queue: Queue) -> None:
    results = await asyncio.gather(
        queue.enqueue("timed", {"ok": 1}),
        queue.enqueue("timed", {"bad": object()}),
        queue.enqueue("timed", {"ok": 2}),
        return_exceptions=True,
    )
    assert isinstance(results[1], TypeError)
    assert not isinstance(results[0], BaseException) and results[0].payload == {"ok": 1}
    assert not isinstance(results[2], BaseException) and results[2].payload == {"ok": 2}


async def test_concurrent_enqueues_of_one_idempotency_key_make_one_job(queue: Queue) -> None:
    jobs = await asyncio.gather(
        *(queue.enqueue("timed", {"n": n}, idempotency_key="once") for n in range(30))
    )
    assert len({job.id for job in jobs}) == 1
    assert sum(job.is_new for job in jobs) == 1


async def test_a_cancelled_caller_does_not_cancel_the_others(queue: Queue) -> None:
    tasks = [asyncio.create_task(queue.enqueue("timed", {"n": n})) for n in range(20)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    done = [r for i, r in enumerate(results) if i != 3]
    assert all(not isinstance(r, BaseException) for r in done)


async def test_mixed_specs_from_concurrent_enqueue_many_calls_keep_their_order(
    queue: Queue,
) -> None:
    batches = [
        [JobSpec(kind="timed", payload={"b": b, "i": i}) for i in range(5)] for b in range(8)
    ]
    results = await asyncio.gather(*(queue.enqueue_many(specs) for specs in batches))
    for b, jobs in enumerate(results):
        assert [job.payload for job in jobs] == [{"b": b, "i": i} for i in range(5)]
        ids = [job.id for job in jobs]
        assert ids == sorted(ids)
    for jobs in results:
        for job in jobs:
            stored = await queue.get(job.id)
            assert stored is not None and stored.payload == job.payload


async def test_a_row_inserted_with_plain_sql_is_found_by_the_poll(
    pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    started: dict[int, float] = {}
    async with running_worker(_timing_registry(started), poll_interval_s=0.5) as w:
        await _idle(w)
        job_id = await pool.fetchval(
            "INSERT INTO pgqueue.jobs (kind) VALUES ('timed') RETURNING id"
        )
        await wait_for(lambda: job_id in started, timeout=5)


@pytest.mark.parametrize("queue_name", ["default", "other"])
async def test_enqueue_on_a_pool_wakes_only_the_workers_of_its_queue(
    queue: Queue, running_worker: WorkerFactory, queue_name: str
) -> None:
    started: dict[int, float] = {}
    async with running_worker(
        _timing_registry(started), poll_interval_s=SLOW_POLL_S, queues=[queue_name]
    ) as w:
        await _idle(w)
        enqueued = time.monotonic()
        job = await queue.enqueue("timed", queue=queue_name)
        await wait_for(lambda: job.id in started, timeout=5)
    assert started[job.id] - enqueued < PROMPT_S
