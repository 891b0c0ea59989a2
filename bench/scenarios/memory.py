"""6. Worker memory: VmRSS of the daemon holding its slots with 100k jobs queued behind."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from bench import handlers, ops
from bench.context import Context
from tests.support.wait import wait_for

SETTLE_SAMPLES = 8  # RSS readings after the slots are full, SETTLE_GAP_S apart; the max counts
SETTLE_GAP_S = 0.25


async def run(ctx: Context) -> dict[str, Any]:
    """Fill `rss_jobs` blocking jobs, start the daemon, read its RSS once its slots are full."""
    config = ctx.config
    concurrency = config.rss_concurrency
    async with ctx.databases.fresh("memory") as dsn:
        await ops.fill(dsn, handlers.BLOCK, config.rss_jobs)
        conn = await asyncpg.connect(dsn)
        # No grace at shutdown: the blocked handlers are cancelled and released at once.
        try:
            with ops.start_worker(
                ctx, "memory", dsn, concurrency=concurrency, env={"PGQUEUE_SHUTDOWN_GRACE_S": "0"}
            ) as worker:

                async def slots_full() -> bool:
                    worker.check_alive()
                    return await ops.count(conn, handlers.BLOCK, "running") >= concurrency

                await wait_for(slots_full, 30, "the worker to fill its slots")
                samples = []
                for _ in range(SETTLE_SAMPLES):
                    samples.append(worker.rss_mb())
                    # Sampling over a short span, not synchronisation: RSS has no event to await.
                    await asyncio.sleep(SETTLE_GAP_S)
        finally:
            await conn.close()
    rss = max(samples)
    ctx.say(
        f"memory: worker RSS {rss:.1f} MiB (concurrency {concurrency}, {config.rss_jobs} queued)"
    )
    return {"worker_rss_mb": round(rss, 1), "worker_rss_jobs": config.rss_jobs}
