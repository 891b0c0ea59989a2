"""1. No-op throughput of one worker process, at concurrency 3 and across a sweep."""

from __future__ import annotations

from typing import Any

import asyncpg

from bench import handlers, ops
from bench.context import Context
from tests.support.processes import ProcessError

BASELINE_CONCURRENCY = 3
MIN_BURST_TIMEOUT_S = 60.0  # seconds; a burst run may take this, or 10 ms a job if longer

# -- states: how many jobs are in each state (the diagnosis when a burst run overruns)
STATES = """
SELECT state::text, count(*) FROM pgqueue.jobs GROUP BY state ORDER BY state
"""


async def measure(ctx: Context, concurrency: int, jobs: int) -> float:
    """Fill a fresh database with `jobs` no-ops, drain it with one `--burst` daemon: jobs/s."""
    async with ctx.databases.fresh(f"tput_c{concurrency}") as dsn:
        await ops.fill(dsn, handlers.NOOP, jobs)
        conn = await asyncpg.connect(dsn)
        try:
            with ops.start_worker(
                ctx, f"throughput-c{concurrency}", dsn, concurrency=concurrency, burst=True
            ) as worker:
                try:
                    await worker.exited(max(MIN_BURST_TIMEOUT_S, jobs / 100), expect=0)
                except ProcessError as exc:
                    states = dict(await conn.fetch(STATES))
                    raise ProcessError(f"{exc}\njobs by state: {states}") from None
            done, seconds = await ops.throughput(conn, handlers.NOOP)
        finally:
            await conn.close()
    if done != jobs:
        raise RuntimeError(f"burst worker finished {done} of {jobs} jobs; see {worker.log_path}")
    return done / seconds


async def run(ctx: Context) -> dict[str, Any]:
    """Sweep the concurrencies; report concurrency 3 and the fastest."""
    jobs = ctx.config.throughput_jobs
    settings = sorted({BASELINE_CONCURRENCY, *ctx.config.concurrencies})
    by_concurrency: dict[int, float] = {}
    for concurrency in settings:
        rate = await measure(ctx, concurrency, jobs)
        by_concurrency[concurrency] = rate
        ctx.say(f"throughput: concurrency {concurrency:>4}: {rate:8.0f} jobs/s ({jobs} no-ops)")
    fastest = max(by_concurrency, key=lambda c: by_concurrency[c])
    return {
        "throughput_jobs_s": round(by_concurrency[fastest]),
        "throughput_c3_jobs_s": round(by_concurrency[BASELINE_CONCURRENCY]),
        "throughput_best_concurrency": fastest,
        "throughput_by_concurrency": {str(c): round(r) for c, r in by_concurrency.items()},
    }
