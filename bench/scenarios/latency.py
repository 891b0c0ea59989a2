"""3. Enqueue-to-start latency with an idle worker: p50/p95/p99."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench import handlers, ops
from bench.context import Context
from bench.stats import percentile
from pgqueue import Queue
from tests.support.processes import Process
from tests.support.wait import wait_for

CONCURRENCY = 3
# A fallback poll this slow never fires during the measurement: every pickup is NOTIFY-driven.
POLL_INTERVAL_S = 30
READY_TIMEOUT_S = 20.0

# -- handler_started: the wall clock the latency handler read at its first line
HANDLER_STARTED = """
SELECT id, (result->>'t')::float8 AS t FROM pgqueue.jobs
WHERE kind = $1 AND state = 'succeeded'
"""


async def wait_idle_and_listening(conn: asyncpg.Connection, worker: Process) -> None:
    """Two probe jobs in turn: the second can only be picked up through NOTIFY (or the
    listener's wake-up on connecting), so once it is done the worker is idle and listening."""
    queue = Queue(conn)
    for expected in (1, 2):
        await queue.enqueue(handlers.NOOP)

        async def probes_done(expected: int = expected) -> bool:
            worker.check_alive()
            return await ops.count(conn, handlers.NOOP, "succeeded") >= expected

        await wait_for(probes_done, READY_TIMEOUT_S, "the worker to be ready")


async def paced_enqueues(
    conn: asyncpg.Connection, jobs: int, interval_s: float
) -> dict[int, float]:
    """Enqueue `jobs` latency jobs `interval_s` apart; job id -> time.time() just before."""
    queue = Queue(conn)
    sent: dict[int, float] = {}
    next_at = time.monotonic()
    for seq in range(jobs):
        # Pacing, not synchronisation: the gap between two enqueues is the workload.
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        before = time.time()
        job = await queue.enqueue(handlers.LATENCY, {"seq": seq})
        sent[job.id] = before
    return sent


async def measure(ctx: Context, label: str = "latency") -> list[float]:
    """Start the daemon, wait until it idles, then time `latency_jobs` paced enqueues: the
    latencies in ms."""
    config = ctx.config
    async with ctx.databases.fresh(label) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            with ops.start_worker(
                ctx,
                label,
                dsn,
                concurrency=CONCURRENCY,
                env={"PGQUEUE_POLL_INTERVAL_S": str(POLL_INTERVAL_S)},
            ) as worker:
                await wait_idle_and_listening(conn, worker)
                sent = await paced_enqueues(
                    conn, config.latency_jobs, config.latency_interval_ms / 1000
                )

                async def all_done() -> bool:
                    worker.check_alive()
                    return await ops.count(conn, handlers.LATENCY, "succeeded") >= len(sent)

                await wait_for(all_done, 60, "the latency jobs to finish")
            rows = await conn.fetch(HANDLER_STARTED, handlers.LATENCY)
        finally:
            await conn.close()
    return [(row["t"] - sent[row["id"]]) * 1000 for row in rows]


async def run(ctx: Context) -> dict[str, Any]:
    """Our pickup latency: p50/p95/p99 and max."""
    latencies_ms = await measure(ctx)
    result = {
        "latency_p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "latency_p95_ms": round(percentile(latencies_ms, 0.95), 2),
        "latency_p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "latency_max_ms": round(max(latencies_ms), 2),
        "latency_jobs": len(latencies_ms),
    }
    ctx.say(
        "latency: p50 {latency_p50_ms} ms, p95 {latency_p95_ms} ms, p99 {latency_p99_ms} ms, "
        "max {latency_max_ms} ms ({latency_jobs} jobs)".format(**result)
    )
    return result
