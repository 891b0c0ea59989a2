"""Enqueue: options stored, batches in order, transactions honoured, idempotency under races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from pgqueue import JobSpec, JobState, Queue


async def test_enqueue_stores_every_option(queue: Queue) -> None:
    run_at = datetime(2030, 1, 1, tzinfo=UTC)
    job = await queue.enqueue(
        "email.send",
        {"to": "a@example.com"},
        queue="mail",
        priority=-5,
        run_at=run_at,
        max_attempts=7,
        timeout=timedelta(seconds=12),
        idempotency_key="mail-1",
        concurrency_key="tenant-1",
        concurrency_limit=2,
    )
    assert job.is_new
    assert (job.queue, job.kind, job.payload) == ("mail", "email.send", {"to": "a@example.com"})
    assert (job.state, job.priority, job.attempts, job.max_attempts) == (JobState.QUEUED, -5, 0, 7)
    assert (job.run_at, job.timeout_s) == (run_at, 12.0)
    assert (job.concurrency_key, job.concurrency_limit) == ("tenant-1", 2)
    assert await queue.get(job.id) == job


async def test_delay_is_relative_to_database_now(queue: Queue, pool: asyncpg.Pool) -> None:
    job = await queue.enqueue("k", delay=timedelta(minutes=10))
    seconds = await pool.fetchval(
        "SELECT extract(epoch FROM run_at - created_at) FROM pgqueue.jobs WHERE id = $1", job.id
    )
    assert 599 < seconds < 601


async def test_enqueue_many_returns_jobs_in_input_order(queue: Queue) -> None:
    specs = [
        JobSpec(kind="k", payload=i, idempotency_key=f"key-{i}" if i % 2 else None)
        for i in range(50)
    ]
    jobs = await queue.enqueue_many(specs)
    assert [job.payload for job in jobs] == list(range(50))
    assert all(job.is_new for job in jobs)


async def test_enqueue_many_returns_the_rows_as_stored(queue: Queue) -> None:
    # The returned jobs are built from what was sent plus the database's id and times; each
    # must equal the row read back, whatever mix of options and defaults the batch holds.
    specs = [
        JobSpec(kind="plain"),
        JobSpec(
            kind="full",
            payload={"b": [1, 2.5, None], "a": "é"},
            queue="other",
            priority=3,
            delay=timedelta(seconds=30),
            max_attempts=9,
            timeout=timedelta(milliseconds=1500),
            idempotency_key="k-1",
            concurrency_key="c-1",
            concurrency_limit=4,
        ),
        JobSpec(
            kind="at",
            payload=[1, "two"],
            run_at=datetime(
                2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
        ),
        JobSpec(kind="scalar", payload="text", priority=-(2**31)),
        JobSpec(kind="full", idempotency_key="k-1"),  # a repeat within the batch
    ]
    jobs = await queue.enqueue_many(specs)
    for job in jobs[:4]:
        assert job.is_new and await queue.get(job.id) == job
    assert jobs[4].id == jobs[1].id and not jobs[4].is_new
    assert jobs[4] == jobs[1]._replace(is_new=False)


async def test_duplicate_keys_return_the_first_job_and_add_no_row(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    first = await queue.enqueue("k", {"n": 1}, idempotency_key="same")
    again = await queue.enqueue("k", {"n": 2}, idempotency_key="same")
    batch = await queue.enqueue_many(
        [
            JobSpec(kind="k", idempotency_key="same"),
            JobSpec(kind="k", idempotency_key="new"),
            JobSpec(kind="k", idempotency_key="new"),
        ]
    )
    assert again.id == first.id and not again.is_new and again.payload == {"n": 1}
    assert batch[0].id == first.id and not batch[0].is_new
    assert batch[1].is_new and batch[2].id == batch[1].id and not batch[2].is_new
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 2


async def test_concurrent_enqueues_of_one_key_make_one_row(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    jobs = await asyncio.gather(*(queue.enqueue("k", idempotency_key="race") for _ in range(20)))
    assert len({job.id for job in jobs}) == 1
    assert sum(job.is_new for job in jobs) == 1
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 1


async def test_enqueue_joins_the_callers_transaction(queue: Queue, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await queue.enqueue("k", conn=conn)
                raise RuntimeError("the app's own write failed")
        async with conn.transaction():
            await queue.enqueue("k", {"kept": True}, conn=conn)
    rows = await pool.fetch("SELECT payload FROM pgqueue.jobs")
    assert [r["payload"] for r in rows] == ['{"kept": true}']


async def test_enqueue_notifies_listeners_once_per_queue(queue: Queue, db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    received: list[str] = []
    await conn.add_listener("pgqueue_jobs", lambda *args: received.append(args[-1]))
    try:
        await queue.enqueue_many(
            [JobSpec(kind="k") for _ in range(100)] + [JobSpec(kind="k", queue="other")]
        )
        await conn.execute("SELECT 1")  # notifications arrive before the next reply
        for _ in range(50):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    assert sorted(received) == ["default", "other"]


async def test_concurrent_batches_sharing_keys_in_opposite_orders_do_not_deadlock(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # Two batches that share idempotency and concurrency keys, listed in opposite orders,
    # committed at the same moment: each waits for the other's keys in one global order.
    keys = [f"key-{n:04d}" for n in range(2000)]

    def batch(order: list[str]) -> list[JobSpec]:
        return [
            JobSpec(kind="k", idempotency_key=key, concurrency_key=key, concurrency_limit=1)
            for key in order
        ]

    for _ in range(5):
        await pool.execute("TRUNCATE pgqueue.jobs, pgqueue.concurrency_slots")
        forward, backward = await asyncio.gather(
            queue.enqueue_many(batch(keys)), queue.enqueue_many(batch(keys[::-1]))
        )
        assert [job.idempotency_key for job in forward] == keys
        assert [job.id for job in backward] == [job.id for job in forward][::-1]
        assert sum(job.is_new for job in forward + backward) == len(keys)
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.concurrency_slots") == len(keys)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("attempts", 5),  # above max_attempts
        ("max_attempts", 0),
        ("finished_at", "now()"),  # a queued job cannot be finished
        ("state", "'running'"),  # running without a lease
        ("concurrency_limit", 3),  # limit without key
        ("kind", "''"),
    ],
)
async def test_schema_refuses_rows_that_break_invariants(
    pool: asyncpg.Pool, column: str, value: object
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            f"INSERT INTO pgqueue.jobs (kind, {column}) VALUES ('k', {value})"
            if column != "kind"
            else "INSERT INTO pgqueue.jobs (kind) VALUES ('')"
        )
