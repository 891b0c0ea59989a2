"""4a. Claim cost against table size: the worker's claim statement, timed directly."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from bench import handlers
from bench.context import Context
from bench.waiting import percentile
from pgqueue import queries
from pgqueue.worker.core import QUEUE_SESSION

WORKER_ID = "bench-claim"
LEASE_S = 30.0
WARMUP_CLAIMS = 5  # the first executions prepare the statement and warm the caches

# -- fill_queued: runnable jobs, as Queue.enqueue would leave them
FILL_QUEUED = """
INSERT INTO pgqueue.jobs (kind) SELECT $1 FROM generate_series(1, $2)
"""

# -- clear_jobs: back to an empty table between two "only the claimed jobs" samples
CLEAR_JOBS = """
DELETE FROM pgqueue.jobs
"""

# -- fill_history: succeeded jobs, as a worker would leave them an hour ago
FILL_HISTORY = """
INSERT INTO pgqueue.jobs (kind, state, attempts, created_at, run_at, started_at, finished_at)
SELECT $1, 'succeeded', 1, t, t, t, t
FROM generate_series(1, $2), (SELECT now() - interval '1 hour' AS t) AS hour_ago
"""


async def _rolled_back(conn: asyncpg.Connection, query: str, *args: Any) -> list[Any]:
    """Run `query` inside a transaction that is rolled back: the table is left as it was."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await transaction.rollback()


async def time_claims(
    conn: asyncpg.Connection, samples: int, limit: int, *, refill: bool = False
) -> list[float]:
    """Run CLAIM_JOBS as the worker does (one autocommit statement); milliseconds each.

    With `refill`, each timed claim finds exactly `limit` queued jobs in an otherwise empty
    table (put there, and cleared afterwards, outside the timing).
    """
    args = (["default"], limit, WORKER_ID, LEASE_S)
    for _ in range(WARMUP_CLAIMS):
        await _rolled_back(conn, queries.CLAIM_JOBS, *args)
    timings = []
    for _ in range(samples):
        if refill:
            await conn.execute(CLEAR_JOBS)
            await conn.execute(FILL_QUEUED, handlers.NOOP, limit)
        started = time.perf_counter()
        await conn.fetch(queries.CLAIM_JOBS, *args)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def explain_claim(conn: asyncpg.Connection, limit: int) -> str:
    """EXPLAIN ANALYZE of one claim, rolled back: the evidence behind the timings."""
    explain = "EXPLAIN (ANALYZE, BUFFERS) " + queries.CLAIM_JOBS
    rows = await _rolled_back(conn, explain, ["default"], limit, WORKER_ID, LEASE_S)
    return "\n".join(row[0] for row in rows)


async def claim_ms(
    ctx: Context, label: str, *, history: int, queued: int, refill: bool = False
) -> tuple[float, str]:
    """p50 claim time on a fresh table holding `history` finished and `queued` queued jobs
    (or, with `refill`, only the jobs each claim takes)."""
    config = ctx.config
    async with ctx.databases.fresh(f"claim_{label}") as dsn:
        # The worker's own session settings: the claim is measured as the worker runs it.
        conn = await asyncpg.connect(dsn, server_settings=QUEUE_SESSION)
        try:
            if history:
                started = time.perf_counter()
                await conn.execute(FILL_HISTORY, handlers.NOOP, history)
                ctx.say(f"claim: {history} finished rows in {time.perf_counter() - started:.1f}s")
            if queued:
                await conn.execute(FILL_QUEUED, handlers.NOOP, queued)
            await conn.execute("VACUUM ANALYZE pgqueue.jobs")
            plan = await explain_claim(conn, config.claim_limit)
            timings = await time_claims(
                conn, config.claim_samples, config.claim_limit, refill=refill
            )
        finally:
            await conn.close()
    p50 = percentile(timings, 0.5)
    ctx.say(
        f"claim: {label:>5}: p50 {p50:.3f} ms, p95 {percentile(timings, 0.95):.3f} ms "
        f"({history} finished, {queued} queued, {config.claim_samples} claims of "
        f"{config.claim_limit})"
    )
    return p50, plan


async def run(ctx: Context) -> dict[str, Any]:
    """An empty table (nothing to claim; then only the claimed jobs), 10k queued alone, and
    10k queued behind 1M finished rows."""
    config = ctx.config
    nothing, _ = await claim_ms(ctx, "nothing", history=0, queued=0)
    empty, _ = await claim_ms(ctx, "empty", history=0, queued=0, refill=True)
    queued, _ = await claim_ms(ctx, "queued", history=0, queued=config.claim_queued_rows)
    result: dict[str, Any] = {
        "claim_nothing_ms": round(nothing, 3),
        "claim_empty_ms": round(empty, 3),
        "claim_queued_only_ms": round(queued, 3),
        "claim_limit": config.claim_limit,
    }
    if config.claim_history_rows:
        big, plan = await claim_ms(
            ctx, "1m", history=config.claim_history_rows, queued=config.claim_queued_rows
        )
        result["claim_1m_ms"] = round(big, 3)
        result["claim_1m_vs_queued_only"] = round(big / queued, 2)
        result["claim_1m_vs_empty"] = round(big / empty, 2)
        result["claim_history_rows"] = config.claim_history_rows
        result["claim_1m_plan"] = plan
    return result
