"""The claim statement: order, limits, SKIP LOCKED between racing workers, concurrency keys."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from pgqueue import JobSpec, Queue, queries

LEASE_S = 30.0

ALL_KINDS = ["k", "ok", "bad", "batched", "job"]  # the kinds these tests claim by hand


async def claim(
    pool: asyncpg.Pool, limit: int, worker: str = "w", queues: list[str] | None = None
) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            queries.CLAIM_JOBS, queues or ["default"], limit, worker, LEASE_S, ALL_KINDS
        )


async def test_claims_by_priority_then_run_at_then_id(queue: Queue, pool: asyncpg.Pool) -> None:
    low = await queue.enqueue("k", "low", priority=10)
    first = await queue.enqueue("k", "first")
    second = await queue.enqueue("k", "second")
    urgent = await queue.enqueue("k", "urgent", priority=-1)
    rows = await claim(pool, 10)
    ordered = sorted(rows, key=lambda r: (r["priority"], r["run_at"], r["id"]))
    assert [r["id"] for r in ordered] == [urgent.id, first.id, second.id, low.id]


async def test_claim_sets_lease_attempt_and_token(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue("k")
    (row,) = await claim(pool, 1, worker="worker-a")
    assert row["state"] == "running" and row["attempts"] == 1 and row["worker_id"] == "worker-a"
    assert row["lease_token"] is not None and row["started_at"] is not None
    lease = await pool.fetchval(
        "SELECT extract(epoch FROM lease_expires_at - now()) FROM pgqueue.jobs WHERE id = $1",
        row["id"],
    )
    assert LEASE_S - 2 < lease <= LEASE_S


async def test_claims_no_more_than_asked_and_skips_delayed_and_other_queues(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.enqueue_many([JobSpec(kind="k") for _ in range(5)])
    await queue.enqueue("k", delay=timedelta(hours=1))
    await queue.enqueue("k", queue="elsewhere")
    assert len(await claim(pool, 3)) == 3
    assert len(await claim(pool, 10)) == 2
    assert await claim(pool, 10) == []
    assert len(await claim(pool, 10, queues=["default", "elsewhere"])) == 1


async def test_a_new_claim_gets_a_new_token(queue: Queue, pool: asyncpg.Pool) -> None:
    job = await queue.enqueue("k")
    (first,) = await claim(pool, 1)
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'queued', lease_expires_at = NULL WHERE id = $1", job.id
    )
    (second,) = await claim(pool, 1)
    assert second["lease_token"] != first["lease_token"]


async def test_racing_claimers_never_share_a_job(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many([JobSpec(kind="k") for _ in range(500)])
    claimed: list[int] = []

    async def claimer(name: str) -> None:
        while rows := await claim(pool, 7, worker=name):
            claimed.extend(r["id"] for r in rows)

    await asyncio.gather(*(claimer(f"w{i}") for i in range(8)))
    assert len(claimed) == 500 and len(set(claimed)) == 500


async def test_concurrency_key_limit_holds_across_racing_claimers(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    specs = [
        JobSpec(kind="k", concurrency_key=f"project-{i % 4}", concurrency_limit=3)
        for i in range(200)
    ]
    await queue.enqueue_many(specs)
    rows_by_round: list[int] = []

    async def claimer(name: str) -> None:
        for _ in range(5):
            rows_by_round.append(len(await claim(pool, 4, worker=name)))

    await asyncio.gather(*(claimer(f"w{i}") for i in range(10)))
    running = await pool.fetch(
        "SELECT concurrency_key, count(*) AS n FROM pgqueue.jobs WHERE state = 'running'"
        " GROUP BY concurrency_key"
    )
    assert {r["concurrency_key"]: r["n"] for r in running} == {f"project-{i}": 3 for i in range(4)}
    slots = await pool.fetch("SELECT key, running FROM pgqueue.concurrency_slots ORDER BY key")
    assert [(r["key"], r["running"]) for r in slots] == [(f"project-{i}", 3) for i in range(4)]


async def test_a_saturated_key_does_not_block_other_jobs(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many(
        [JobSpec(kind="k", concurrency_key="busy", concurrency_limit=1) for _ in range(20)]
    )
    free = await queue.enqueue("k", priority=5)
    first = await claim(pool, 3)
    second = await claim(pool, 3)
    ids = [r["id"] for r in first + second]
    assert free.id in ids
    assert sum(1 for r in first + second if r["concurrency_key"] == "busy") == 1


async def test_finishing_a_keyed_job_frees_its_slot(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many(
        [JobSpec(kind="k", concurrency_key="p", concurrency_limit=1) for _ in range(2)]
    )
    (row,) = await claim(pool, 5)
    assert await claim(pool, 5) == []
    async with pool.acquire() as conn:
        await conn.fetchrow(queries.COMPLETE_JOB, row["id"], row["lease_token"], "null", None)
    assert len(await claim(pool, 5)) == 1
