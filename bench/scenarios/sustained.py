"""4b. A sustained run: jobs/s in its first 5 s against its last 5 s, as finished rows pile up."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from bench import handlers, ops
from bench.context import Context
from pgqueue import JobSpec, Queue
from tests.support.wait import wait_for

WINDOW_S = 5.0
DEFAULT_CONCURRENCY = 50  # when the throughput sweep did not run
BACKLOG_LOW = 20_000  # the feeder tops the queue up below this many runnable jobs
FEED_CHUNK = 5_000
FEED_POLL_S = 0.05

# -- windows: jobs finished in the first and the last $3 seconds of a run of $2 seconds from $4
WINDOWS = """
SELECT count(*) FILTER (WHERE finished_at < $4::timestamptz + make_interval(secs => $3)) AS first,
       count(*) FILTER (WHERE finished_at >= $4::timestamptz + make_interval(secs => $2 - $3)
                          AND finished_at < $4::timestamptz + make_interval(secs => $2)) AS last,
       count(*) FILTER (WHERE finished_at < $4::timestamptz + make_interval(secs => $2)) AS total
FROM pgqueue.jobs
WHERE kind = $1 AND state = 'succeeded'
"""

# -- first_start: when the first job of the run started
FIRST_START = """
SELECT min(started_at) FROM pgqueue.jobs WHERE kind = $1 AND state <> 'queued'
"""

# -- elapsed: seconds since $1, by the database's clock (cheap: no table scan during the run)
ELAPSED = """
SELECT extract(epoch FROM now() - $1::timestamptz)::float8
"""


class Feeder:
    """Keeps at least BACKLOG_LOW runnable jobs queued, so the worker never runs dry."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.lowest_backlog: int | None = None

    async def run(self) -> None:
        """Top up until cancelled."""
        conn = await asyncpg.connect(self.dsn)
        try:
            queue = Queue(conn)
            while True:
                waiting = await queue.count_waiting(["default"])
                if self.lowest_backlog is None or waiting < self.lowest_backlog:
                    self.lowest_backlog = waiting
                if waiting < BACKLOG_LOW:
                    await queue.enqueue_many([JobSpec(kind=handlers.NOOP)] * FEED_CHUNK)
                else:
                    await asyncio.sleep(FEED_POLL_S)
        finally:
            await conn.close()


async def run(ctx: Context) -> dict[str, Any]:
    """Run one daemon for `sustained_s` seconds over a queue kept full; compare the windows."""
    duration_s = ctx.config.sustained_s
    concurrency = (
        ctx.config.sustained_concurrency
        or ctx.figures.get("throughput_best_concurrency")
        or DEFAULT_CONCURRENCY
    )
    async with ctx.databases.fresh("sustained") as dsn:
        await ops.fill(dsn, handlers.NOOP, BACKLOG_LOW + FEED_CHUNK)
        conn = await asyncpg.connect(dsn)
        feeder = Feeder(dsn)
        feeding = asyncio.create_task(feeder.run(), name="bench-feeder")
        try:
            with ops.start_worker(ctx, "sustained", dsn, concurrency=concurrency) as worker:

                def healthy() -> None:
                    worker.check_alive()
                    if feeding.done():
                        feeding.result()  # surfaces the feeder's error

                async def first_start() -> datetime | None:
                    healthy()
                    started: datetime | None = await conn.fetchval(FIRST_START, handlers.NOOP)
                    return started

                async def run_over() -> bool:
                    healthy()
                    return bool(await conn.fetchval(ELAPSED, t0) >= duration_s)

                t0 = await wait_for(first_start, 30, "the first job to start")
                ctx.say(f"sustained: {duration_s:.0f}s at concurrency {concurrency}...")
                await wait_for(run_over, duration_s + 60, "the sustained run", poll_s=0.25)
        finally:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
        try:
            await conn.execute("ANALYZE pgqueue.jobs")  # fresh statistics for a sane plan
            row = await conn.fetchrow(WINDOWS, handlers.NOOP, duration_s, WINDOW_S, t0)
        finally:
            await conn.close()
    first = row["first"] / WINDOW_S
    last = row["last"] / WINDOW_S
    mean = row["total"] / duration_s
    ctx.say(
        f"sustained: first {WINDOW_S:.0f}s {first:.0f} jobs/s, last {WINDOW_S:.0f}s {last:.0f} "
        f"jobs/s, mean {mean:.0f} jobs/s ({row['total']} jobs; lowest backlog "
        f"{feeder.lowest_backlog})"
    )
    return {
        "sustained_first5_jobs_s": round(first),
        "sustained_last5_jobs_s": round(last),
        "sustained_mean_jobs_s": round(mean),
        "sustained_last_vs_first": round(last / first, 3) if first else None,
        "sustained_s": duration_s,
        "sustained_concurrency": concurrency,
        "sustained_jobs": row["total"],
        "sustained_lowest_backlog": feeder.lowest_backlog,
    }
