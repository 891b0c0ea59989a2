"""Concurrency-slot rows no job needs are deleted, safely beside enqueues and claims, at scale."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from pgqueue import JobSpec, Queue, store

KINDS = ["k"]


async def _slot_keys(pool: asyncpg.Pool) -> set[str]:
    return {r["key"] for r in await pool.fetch("SELECT key FROM pgqueue.concurrency_slots")}


async def _purge_all(pool: asyncpg.Pool) -> int:
    total = 0
    while purged := await store.purge_idle_concurrency_slots(pool, batch_size=1000):
        total += purged
    return total


async def test_idle_slots_go_and_the_ones_in_use_stay(queue: Queue, pool: asyncpg.Pool) -> None:
    spec = {"concurrency_limit": 2}
    await queue.enqueue("k", concurrency_key="waiting", **spec)
    running = await queue.enqueue("k", concurrency_key="running", **spec)
    done = await queue.enqueue("k", concurrency_key="done", **spec)
    claim = store.ClaimRequest(["default"], KINDS, 2, "w", 60.0)
    async with pool.acquire() as conn:
        claimed = await store.claim(conn, claim)
    # The two claimed are `waiting`'s job and `running`'s; finish the "done" one by hand.
    assert {job.concurrency_key for job in claimed} == {"waiting", "running"}
    by_key = {job.concurrency_key: job for job in claimed}
    success = store.Success(by_key["waiting"].id, by_key["waiting"].lease_token or 0, "null")
    assert await store.complete(pool, [success]) == {by_key["waiting"].id}
    assert await _purge_all(pool) == 1  # `waiting` is idle now; `done` still has a queued job
    assert await _slot_keys(pool) == {"running", "done"}
    assert running.id in {job.id for job in claimed} and done.id not in {j.id for j in claimed}


async def test_a_purge_during_an_enqueue_keeps_the_keys_slot(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # The purge must never delete the row of a key whose job is being enqueued: the claim
    # reads a missing row as a full key, and the job would wait for ever. The key's row exists
    # and is idle (the project ran before: this is a regenerate), the enqueue's insert found
    # it, and a purge runs before the enqueue commits.
    await pool.execute("INSERT INTO pgqueue.concurrency_slots (key) VALUES ('project')")
    async with pool.acquire() as conn, conn.transaction():
        await queue.enqueue("k", concurrency_key="project", concurrency_limit=3, conn=conn)
        assert await store.purge_idle_concurrency_slots(pool, batch_size=1000) == 0
    assert await _slot_keys(pool) == {"project"}
    claim = store.ClaimRequest(["default"], KINDS, 10, "w", 60.0)
    assert len(await store.claim(pool, claim)) == 1


async def test_enqueues_racing_purges_keep_every_slot(queue: Queue, pool: asyncpg.Pool) -> None:
    # The same, many at once: each key's idle row exists, enqueues hold their transactions a
    # moment after the insert, and purges run back to back on another connection.
    await pool.execute(
        "INSERT INTO pgqueue.concurrency_slots (key)"
        " SELECT 'project-' || n FROM generate_series(0, 199) AS n"
    )
    stop = asyncio.Event()

    async def purge_forever() -> None:
        while not stop.is_set():
            await store.purge_idle_concurrency_slots(pool, batch_size=1000)
            await asyncio.sleep(0)

    async def enqueue(n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await queue.enqueue("k", concurrency_key=f"project-{n}", concurrency_limit=3, conn=conn)
            await asyncio.sleep(0.002 * (n % 5))

    # Half the rows are purged before their enqueue (they come back with it), half after.
    purger = asyncio.create_task(purge_forever())
    try:
        for start in range(0, 200, 20):
            await asyncio.gather(*(enqueue(n) for n in range(start, start + 20)))
    finally:
        stop.set()
        await purger
    assert await _slot_keys(pool) == {f"project-{n}" for n in range(200)}
    claim = store.ClaimRequest(["default"], KINDS, 1000, "w", 60.0)
    assert len(await store.claim(pool, claim)) == 200


async def test_the_purge_holds_at_a_hundred_thousand_keys(queue: Queue, pool: asyncpg.Pool) -> None:
    # A service keyed by project: 100k finished projects' rows, and a few live ones.
    await pool.execute(
        "INSERT INTO pgqueue.concurrency_slots (key)"
        " SELECT 'old-' || n FROM generate_series(1, 100000) AS n"
    )
    await queue.enqueue_many(
        [JobSpec(kind="k", concurrency_key=f"live-{n}", concurrency_limit=3) for n in range(50)]
    )
    await pool.execute("ANALYZE pgqueue.concurrency_slots")
    started = time.monotonic()
    deleted = 0
    for _ in range(store.PURGE_MAX_BATCHES * 2):
        purged = await store.purge_idle_concurrency_slots(pool, batch_size=store.PURGE_BATCH)
        deleted += purged
        if purged < store.PURGE_BATCH:
            break
    elapsed = time.monotonic() - started
    assert deleted == 100_000
    assert await _slot_keys(pool) == {f"live-{n}" for n in range(50)}
    # Not a benchmark: a loose bound that a scan per slot row (no index) would not meet.
    assert elapsed < 60, f"purging 100k idle slots took {elapsed:.1f}s"
