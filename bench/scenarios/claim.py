"""4a. Claim cost against table size: the worker's claim statement, timed directly; and the
same 1M-row table with every queued job under one rate-limit key (schema v7), or under a
fairness key and a budget (schema v8)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import asyncpg

from bench import handlers
from bench.context import Context
from bench.stats import percentile
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

# -- limit_queued: every queued job under one rate-limit key whose limit never holds a claim
# -- back (10000 a second; the bench claims about 2000 a second), so each claim pays the full
# -- path: the key's row locked, its window's starts read, the claimed starts appended
LIMIT_QUEUED = """
WITH keyed AS (
    UPDATE pgqueue.jobs SET rate_limit_key = 'bench' WHERE state = 'queued' RETURNING 1
)
INSERT INTO pgqueue.rate_limits (key, capacity, period_s)
SELECT 'bench', 10000, 1 FROM (SELECT count(*) FROM keyed) AS done
"""

# -- fill_governed: runnable jobs under a fairness key and a budget each (schema v8), as the
# -- storyboard service enqueues them: 100 users taking turns, each job costing 1 against its
# -- user's budget (budget_governed), whose amount never parks one, so each claim pays the
# -- whole path: the budgets' rows locked, the candidates' costs summed against them, the
# -- reservations written. The insert's trigger takes each job's fair turn (its run_at).
FILL_GOVERNED = """
INSERT INTO pgqueue.jobs (kind, fairness_key, cost, budget_keys)
SELECT $1, 'user:' || n % 100, 1, ARRAY['user:' || n % 100] FROM generate_series(1, $2) AS n
"""

# -- budget_governed: the 100 users' budgets, far above what the run spends
BUDGET_GOVERNED = """
INSERT INTO pgqueue.budgets (key, amount, period_s)
SELECT 'user:' || k, 1e9, 86400 FROM generate_series(0, 99) AS k
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


@dataclasses.dataclass
class Table:
    """One table state whose claims are timed: a fresh database, filled once."""

    label: str
    history: int
    queued: int
    refill: bool  # before each claim: only `limit` queued jobs, nothing else
    rate_limited: bool = False  # every queued job under one rate-limit key
    governed: bool = False  # every queued job under a fairness key and a budget
    conn: asyncpg.Connection | None = None
    timings: list[float] = dataclasses.field(default_factory=list)
    plan: str = ""

    async def fill(self, ctx: Context, dsn: str, limit: int) -> None:
        """Connect with the worker's session settings and fill the table; warm the claim."""
        self.conn = await asyncpg.connect(dsn, server_settings=QUEUE_SESSION)
        if self.history:
            started = time.perf_counter()
            await self.conn.execute(FILL_HISTORY, handlers.NOOP, self.history)
            ctx.say(f"claim: {self.history} finished rows in {time.perf_counter() - started:.1f}s")
        if self.queued and self.governed:
            await self.conn.execute(BUDGET_GOVERNED)
            await self.conn.execute(FILL_GOVERNED, handlers.NOOP, self.queued)
        elif self.queued:
            await self.conn.execute(FILL_QUEUED, handlers.NOOP, self.queued)
        if self.rate_limited:
            await self.conn.execute(LIMIT_QUEUED)
        await self.conn.execute("VACUUM ANALYZE pgqueue.jobs")
        self.plan = await explain_claim(self.conn, limit)
        for _ in range(WARMUP_CLAIMS):
            await _rolled_back(self.conn, queries.CLAIM_JOBS, *_claim_args(limit))

    async def time_one(self, limit: int) -> None:
        """Time one claim, as the worker runs it (one autocommit statement)."""
        assert self.conn is not None
        if self.refill:
            await self.conn.execute(CLEAR_JOBS)
            await self.conn.execute(FILL_QUEUED, handlers.NOOP, limit)
        started = time.perf_counter()
        await self.conn.fetch(queries.CLAIM_JOBS, *_claim_args(limit))
        self.timings.append((time.perf_counter() - started) * 1000)


def _claim_args(limit: int) -> tuple[Any, ...]:
    # As the worker's store passes them: queues, limit, worker id, lease, the kinds it knows.
    return (["default"], limit, WORKER_ID, LEASE_S, [handlers.NOOP])


async def explain_claim(conn: asyncpg.Connection, limit: int) -> str:
    """EXPLAIN ANALYZE of one claim, rolled back: the evidence behind the timings."""
    explain = "EXPLAIN (ANALYZE, BUFFERS) " + queries.CLAIM_JOBS
    rows = await _rolled_back(conn, explain, *_claim_args(limit))
    return "\n".join(row[0] for row in rows)


async def run(ctx: Context) -> dict[str, Any]:
    """Claims timed on four tables, one claim on each in turn (so that the machine's drift
    over the run falls on all of them alike): empty (nothing to claim), empty but for the jobs
    each claim takes, 10k queued, and 10k queued behind 1M finished rows (plain, under one
    rate-limit key, and under fairness keys and budgets)."""
    config = ctx.config
    limit = config.claim_limit
    queued = config.claim_queued_rows
    tables = [
        Table("nothing", history=0, queued=0, refill=False),
        Table("empty", history=0, queued=0, refill=True),
        Table("queued", history=0, queued=queued, refill=False),
    ]
    if config.claim_history_rows:
        tables.append(Table("1m", history=config.claim_history_rows, queued=queued, refill=False))
        tables.append(
            Table(
                "1m_limited",
                history=config.claim_history_rows,
                queued=queued,
                refill=False,
                rate_limited=True,
            )
        )
        tables.append(
            Table(
                "1m_governed",
                history=config.claim_history_rows,
                queued=queued,
                refill=False,
                governed=True,
            )
        )
    async with contextlib.AsyncExitStack() as stack:
        for table in tables:
            dsn = await stack.enter_async_context(ctx.databases.fresh(f"claim_{table.label}"))
            await table.fill(ctx, dsn, limit)
            assert table.conn is not None
            stack.push_async_callback(table.conn.close)
        for _ in range(config.claim_samples):
            for table in tables:
                await table.time_one(limit)
    p50 = {}
    for table in tables:
        p50[table.label] = percentile(table.timings, 0.5)
        ctx.say(
            f"claim: {table.label:>7}: p50 {p50[table.label]:.3f} ms, "
            f"p95 {percentile(table.timings, 0.95):.3f} ms ({table.history} finished, "
            f"{table.queued} queued{', refilled' if table.refill else ''}"
            f"{', one rate-limit key' if table.rate_limited else ''}"
            f"{', fairness keys and budgets' if table.governed else ''}, "
            f"{config.claim_samples} claims of {limit})"
        )
    result: dict[str, Any] = {
        "claim_nothing_ms": round(p50["nothing"], 3),
        "claim_empty_ms": round(p50["empty"], 3),
        "claim_queued_only_ms": round(p50["queued"], 3),
        "claim_limit": limit,
    }
    if "1m" in p50:
        result["claim_1m_ms"] = round(p50["1m"], 3)
        result["claim_1m_vs_queued_only"] = round(p50["1m"] / p50["queued"], 2)
        result["claim_1m_vs_empty"] = round(p50["1m"] / p50["empty"], 2)
        result["claim_history_rows"] = config.claim_history_rows
        result["claim_1m_plan"] = tables[3].plan
        result["claim_1m_limited_ms"] = round(p50["1m_limited"], 3)
        result["claim_1m_limited_vs_1m"] = round(p50["1m_limited"] / p50["1m"], 2)
        result["claim_1m_limited_plan"] = tables[4].plan
        result["claim_1m_governed_ms"] = round(p50["1m_governed"], 3)
        result["claim_1m_governed_vs_1m"] = round(p50["1m_governed"] / p50["1m"], 2)
        result["claim_1m_governed_plan"] = tables[5].plan
    return result
