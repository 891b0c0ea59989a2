"""2. Enqueue rates: enqueue_many in batches, and one job per call (alone and concurrently)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench import handlers
from bench.context import Context
from pgqueue import JobSpec, Queue


async def batch_rate(dsn: str, jobs: int, batch: int) -> float:
    """jobs/s of `enqueue_many` with `batch` specs per call, on one connection."""
    conn = await asyncpg.connect(dsn)
    try:
        queue = Queue(conn)
        # Specs are built outside the timed section: the rate is the queue's, not the caller's.
        batches = [
            [JobSpec(kind=handlers.NOOP) for _ in range(min(batch, jobs - start))]
            for start in range(0, jobs, batch)
        ]
        started = time.perf_counter()
        for specs in batches:
            await queue.enqueue_many(specs)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def single_rate(dsn: str, jobs: int, callers: int) -> float:
    """jobs/s of `enqueue` (one job per call) from `callers` concurrent tasks on one pool."""
    async with asyncpg.create_pool(dsn, min_size=callers, max_size=callers) as pool:
        queue = Queue(pool)
        per_caller = jobs // callers

        async def caller() -> None:
            for _ in range(per_caller):
                await queue.enqueue(handlers.NOOP)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return per_caller * callers / (time.perf_counter() - started)


async def run(ctx: Context) -> dict[str, Any]:
    """Batch, sequential single, and concurrent single enqueue rates."""
    config = ctx.config
    async with ctx.databases.fresh("enqueue") as dsn:
        batch = await batch_rate(dsn, config.enqueue_jobs, config.enqueue_batch)
        ctx.say(f"enqueue: enqueue_many x{config.enqueue_batch}: {batch:8.0f} jobs/s")
    async with ctx.databases.fresh("enqueue1") as dsn:
        single = await single_rate(dsn, config.single_enqueue_jobs, 1)
        ctx.say(f"enqueue: single, sequential:    {single:8.0f} jobs/s")
        callers = config.single_enqueue_callers
        concurrent = await single_rate(dsn, config.single_enqueue_jobs, callers)
        ctx.say(f"enqueue: single, {callers} callers:     {concurrent:8.0f} jobs/s")
    return {
        "batch_enqueue_jobs_s": round(batch),
        "single_enqueue_jobs_s": round(single),
        "single_enqueue_concurrent_jobs_s": round(concurrent),
        "single_enqueue_callers": callers,
    }
