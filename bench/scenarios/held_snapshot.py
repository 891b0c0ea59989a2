"""4c. A held snapshot: the worker's finished rate while one transaction holds the xmin horizon.

Production's analytics queries are long `REPEATABLE READ` transactions: while one runs, no
VACUUM may remove a row version that died after its snapshot, so every job claimed meanwhile
leaves dead versions behind, and any claim that has to walk past them slows down.

A producer enqueues no-ops at a fixed rate (`held_rate`, 5,000/s: `enqueue_many` every 100 ms,
on a schedule it catches up on when late), one real daemon (`python -m pgqueue.worker
bench.handlers:registry --concurrency 50`) runs them. After `held_before_s` (15 s) a
`REPEATABLE READ` transaction takes a snapshot and holds it for `held_s` (120 s; --quick: 20),
then `held_after_s` (30 s) follow. The shared server runs no autovacuum, so the scenario VACUUMs
the queue's tables every 10 s, as autovacuum would (the worker's own VACUUM runs too).

Per second, from SQL after the run: jobs finished, jobs started, jobs enqueued, and so the
runnable backlog at the end of each second (enqueued - started; every job is runnable at once).
Sampled live every second: `n_dead_tup` of pgqueue.jobs and the time of one claim-like index
probe (the first runnable job, as the claim's scan finds it). Printed per phase (before /
during the hold / after); the targets: the rate during the hold >= 0.9x the rate before, and
the backlog never above 2 s of arrivals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from datetime import datetime
from typing import Any

import asyncpg

from bench import handlers, ops
from bench.context import Context
from pgqueue import JobSpec, Queue
from tests.support.wait import wait_for

TICK_S = 0.1  # the producer enqueues one batch per tick
VACUUM_EVERY_S = 10.0
SAMPLE_EVERY_S = 1.0
WARMUP_S = 3  # seconds at the start left out of the 'before' rate (the worker starting)
CONCURRENCY = 50

# -- per_second: jobs of kind $1 enqueued, started and finished in each second after $2, for
# -- $3 seconds (three passes over the table, grouped by second)
PER_SECOND = """
SELECT s.n,
       coalesce(e.jobs, 0) AS enqueued, coalesce(b.jobs, 0) AS started,
       coalesce(f.jobs, 0) AS finished
FROM generate_series(0, $3 - 1) AS s(n)
LEFT JOIN (SELECT floor(extract(epoch FROM created_at - $2::timestamptz))::int AS n,
                  count(*) AS jobs
           FROM pgqueue.jobs WHERE kind = $1 GROUP BY 1) AS e ON e.n = s.n
LEFT JOIN (SELECT floor(extract(epoch FROM started_at - $2::timestamptz))::int AS n,
                  count(*) AS jobs
           FROM pgqueue.jobs WHERE kind = $1 AND started_at IS NOT NULL GROUP BY 1) AS b
       ON b.n = s.n
LEFT JOIN (SELECT floor(extract(epoch FROM finished_at - $2::timestamptz))::int AS n,
                  count(*) AS jobs
           FROM pgqueue.jobs WHERE kind = $1 AND state = 'succeeded' GROUP BY 1) AS f
       ON f.n = s.n
ORDER BY s.n
"""

# -- before_start: jobs of kind $1 enqueued before $2 (the backlog's starting point)
BEFORE_START = """
SELECT count(*) FILTER (WHERE created_at < $2::timestamptz)
       - count(*) FILTER (WHERE started_at < $2::timestamptz)
FROM pgqueue.jobs WHERE kind = $1
"""

# -- dead_tuples: pgqueue.jobs's dead row versions, as the statistics collector has them
DEAD_TUPLES = """
SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'pgqueue' AND relname = 'jobs'
"""

# -- probe: the first runnable job of the queue, the way the claim's scan finds it (the claim's
# -- index, its order; the claim itself would also lock it)
PROBE = """
SELECT id FROM pgqueue.jobs
WHERE state = 'queued' AND queue = 'default' AND run_at <= now()
ORDER BY priority, run_at, id
LIMIT 1
"""

# -- probe_from_marks: the same where claims start at a mark per queue and priority (schema
# -- v15)
PROBE_FROM_MARKS = """
SELECT j.id
FROM pgqueue.claim_marks AS m
CROSS JOIN LATERAL (
    SELECT id FROM pgqueue.jobs
    WHERE state = 'queued' AND queue = m.queue AND priority = m.priority
      AND (run_at, id) >= (m.run_at, m.id) AND run_at <= now()
    ORDER BY run_at, id
    LIMIT 1
) AS j
WHERE m.queue = 'default'
ORDER BY m.priority
LIMIT 1
"""

# -- has_marks: whether the schema has claim marks
HAS_MARKS = "SELECT to_regclass('pgqueue.claim_marks') IS NOT NULL"

# -- queue_tables: the tables autovacuum would visit
QUEUE_TABLES = """
SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables
WHERE schemaname = 'pgqueue' ORDER BY relname
"""

# -- now: the database's clock
NOW = "SELECT clock_timestamp()"


@dataclasses.dataclass(slots=True)
class _Sample:
    at_s: float  # seconds since t0
    dead_tuples: int
    probe_ms: float


class Producer:
    """Enqueues `rate` no-ops a second, one `enqueue_many` per 100 ms tick, until cancelled."""

    def __init__(self, dsn: str, rate: int) -> None:
        self.dsn = dsn
        self.rate = rate
        self.enqueued = 0
        self.most_late_s = 0.0  # the furthest the schedule fell behind

    async def run(self) -> None:
        """Keep to the schedule (a late tick is made up at once)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            queue = Queue(conn)
            started = time.monotonic()
            tick = 0
            while True:
                due = started + tick * TICK_S
                late = time.monotonic() - due
                if late < 0:
                    await asyncio.sleep(-late)
                else:
                    self.most_late_s = max(self.most_late_s, late)
                tick += 1
                target = round(self.rate * tick * TICK_S)
                count = target - self.enqueued
                if count > 0:
                    await queue.enqueue_many([JobSpec(kind=handlers.NOOP)] * count)
                    self.enqueued += count
        finally:
            await conn.close()


async def _vacuum(dsn: str) -> None:
    """VACUUM pgqueue's tables every VACUUM_EVERY_S, as autovacuum would, until cancelled."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [row[0] for row in await conn.fetch(QUEUE_TABLES)]
        while True:
            await asyncio.sleep(VACUUM_EVERY_S)
            for table in tables:
                await conn.execute(f"VACUUM {table}")
    finally:
        await conn.close()


async def _sample(dsn: str, t0: float, samples: list[_Sample]) -> None:
    """Every second: dead tuples and one probe's time, until cancelled."""
    conn = await asyncpg.connect(dsn)
    try:
        probe = PROBE_FROM_MARKS if await conn.fetchval(HAS_MARKS) else PROBE
        while True:
            started = time.perf_counter()
            await conn.fetchval(probe)
            probe_ms = (time.perf_counter() - started) * 1000
            dead = await conn.fetchval(DEAD_TUPLES)
            samples.append(_Sample(time.monotonic() - t0, int(dead or 0), probe_ms))
            await asyncio.sleep(SAMPLE_EVERY_S)
    finally:
        await conn.close()


def _phase(rows: list[dict[str, int]], start: int, end: int, key: str) -> float:
    values = [row[key] for row in rows[start:end]]
    return sum(values) / len(values) if values else 0.0


async def run(ctx: Context) -> dict[str, Any]:
    """One run: before, during and after the held snapshot."""
    config = ctx.config
    rate, before_s, held_s, after_s = (
        config.held_rate,
        config.held_before_s,
        config.held_s,
        config.held_after_s,
    )
    total_s = before_s + held_s + after_s
    ctx.say(
        f"held_snapshot: {rate} jobs/s, concurrency {CONCURRENCY}, {before_s:.0f}s before, "
        f"{held_s:.0f}s held, {after_s:.0f}s after..."
    )
    await ops.settle(ctx)
    samples: list[_Sample] = []
    async with ctx.databases.fresh("held-snapshot") as dsn:
        conn = await asyncpg.connect(dsn)
        holder = await asyncpg.connect(dsn)
        producer = Producer(dsn, rate)
        tasks: list[asyncio.Task[None]] = []
        try:
            with ops.start_worker(ctx, "held-snapshot", dsn, concurrency=CONCURRENCY) as worker:
                t0_db: datetime = await conn.fetchval(NOW)
                t0 = time.monotonic()
                tasks = [
                    asyncio.create_task(producer.run(), name="bench-producer"),
                    asyncio.create_task(_vacuum(dsn), name="bench-vacuum"),
                    asyncio.create_task(_sample(dsn, t0, samples), name="bench-sampler"),
                ]

                async def until(seconds: float) -> None:
                    def over() -> bool:
                        worker.check_alive()
                        for task in tasks:
                            if task.done():
                                task.result()  # surfaces its error
                        return time.monotonic() - t0 >= seconds

                    await wait_for(over, seconds + 60, f"{seconds:.0f}s into the run", poll_s=0.1)

                await until(before_s)
                hold = holder.transaction(isolation="repeatable_read", readonly=True)
                await hold.start()
                await holder.fetchval("SELECT count(*) FROM pgqueue.paused_queues")
                held_from = time.monotonic() - t0
                ctx.say(f"held_snapshot: snapshot held from {held_from:.1f}s")
                await until(before_s + held_s)
                await hold.rollback()
                held_to = time.monotonic() - t0
                ctx.say(f"held_snapshot: snapshot released at {held_to:.1f}s")
                await until(total_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await holder.close()
        try:
            await conn.execute("ANALYZE pgqueue.jobs")
            seconds = int(total_s)
            rows = [
                dict(row) for row in await conn.fetch(PER_SECOND, handlers.NOOP, t0_db, seconds)
            ]
            backlog = int(await conn.fetchval(BEFORE_START, handlers.NOOP, t0_db) or 0)
        finally:
            await conn.close()
    for row in rows:
        backlog += row["enqueued"] - row["started"]
        row["backlog"] = backlog
    hold_start, hold_end = round(held_from), round(held_to)
    phases = {
        "before": (WARMUP_S, hold_start),
        "during": (hold_start, hold_end),
        "after": (hold_end, len(rows)),
    }
    figures: dict[str, Any] = {}
    for name, (start, end) in phases.items():
        finished = _phase(rows, start, end, "finished")
        enqueued = _phase(rows, start, end, "enqueued")
        max_backlog = max((row["backlog"] for row in rows[start:end]), default=0)
        in_phase = [s for s in samples if start <= s.at_s < end]
        dead = max((s.dead_tuples for s in in_phase), default=0)
        probes = [s.probe_ms for s in in_phase]
        probe_p50 = statistics.median(probes) if probes else 0.0
        probe_max = max(probes, default=0.0)
        ctx.say(
            f"held_snapshot: {name:6}: finished {finished:6.0f} jobs/s, enqueued "
            f"{enqueued:6.0f}/s, max backlog {max_backlog:7d}, dead tuples up to {dead:7d}, "
            f"probe p50 {probe_p50:7.2f} ms (max {probe_max:.2f})"
        )
        figures[f"held_{name}_jobs_s"] = round(finished)
        figures[f"held_{name}_max_backlog"] = max_backlog
        figures[f"held_{name}_dead_tuples_max"] = dead
        figures[f"held_{name}_probe_p50_ms"] = round(probe_p50, 3)
        figures[f"held_{name}_probe_max_ms"] = round(probe_max, 3)
    before = figures["held_before_jobs_s"]
    ratio = figures["held_during_jobs_s"] / before if before else 0.0
    worst = max(row["backlog"] for row in rows[WARMUP_S:]) if rows[WARMUP_S:] else 0
    ctx.say(
        "held_snapshot: per second (finished/backlog): "
        + ", ".join(f"{row['finished']}/{row['backlog']}" for row in rows)
    )
    ctx.say(
        f"held_snapshot: during / before {ratio:.3f}; max backlog {worst} jobs = "
        f"{worst / rate:.2f} s of arrivals; producer at most {producer.most_late_s:.2f}s late"
    )
    figures.update(
        {
            "held_during_vs_before": round(ratio, 3),
            "held_max_backlog": worst,
            "held_max_backlog_s": round(worst / rate, 2),
            "held_rate": rate,
            "held_s": held_s,
            "held_producer_most_late_s": round(producer.most_late_s, 3),
            "held_per_second": [
                [row["enqueued"], row["started"], row["finished"], row["backlog"]] for row in rows
            ],
            "held_samples": [
                [round(s.at_s, 1), s.dead_tuples, round(s.probe_ms, 3)] for s in samples
            ],
        }
    )
    return figures
