"""4b. A sustained run: jobs/s in its first 5 s against its last 5 s, as finished rows pile up.

The figure is the median of `sustained_runs` runs (3), each on a fresh database after a
CHECKPOINT and a sync. One 60 s run's ratio moved between 0.81 and 1.09 on the same commit here
(two shared cores; a checkpoint or another process's burst in either 5 s window decides it), so
one run says more about the machine than about the queue; the median of three, beside every
run's ratio and the median run's per-window rates, says what the code does.
"""

from __future__ import annotations

import asyncio
import dataclasses
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

# -- windows: jobs finished in each $3-second window of a run of $2 seconds from $4
WINDOWS = """
SELECT floor(extract(epoch FROM finished_at - $4::timestamptz) / $3)::int AS window,
       count(*) AS jobs
FROM pgqueue.jobs
WHERE kind = $1 AND state = 'succeeded'
  AND finished_at >= $4::timestamptz AND finished_at < $4::timestamptz + make_interval(secs => $2)
GROUP BY 1 ORDER BY 1
"""

# -- first_start: when the first job of the run started
FIRST_START = """
SELECT min(started_at) FROM pgqueue.jobs WHERE kind = $1 AND state <> 'queued'
"""

# -- elapsed: seconds since $1, by the database's clock (cheap: no table scan during the run)
ELAPSED = """
SELECT extract(epoch FROM now() - $1::timestamptz)::float8
"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Run:
    rates: list[float]  # jobs/s finished in each window, in order
    lowest_backlog: int | None

    @property
    def first(self) -> float:
        return self.rates[0]

    @property
    def last(self) -> float:
        return self.rates[-1]

    @property
    def ratio(self) -> float:
        return self.last / self.first if self.first else 0.0

    @property
    def jobs(self) -> int:
        return round(sum(self.rates) * WINDOW_S)

    @property
    def mean(self) -> float:
        return sum(self.rates) / len(self.rates)


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


async def _one_run(ctx: Context, label: str, concurrency: int) -> _Run:
    """One daemon for `sustained_s` seconds over a queue kept full, on a fresh database."""
    duration_s = ctx.config.sustained_s
    windows = max(1, int(duration_s // WINDOW_S))  # whole windows only: the last is full
    await ops.settle(ctx)
    async with ctx.databases.fresh(label) as dsn:
        await ops.fill(dsn, handlers.NOOP, BACKLOG_LOW + FEED_CHUNK)
        conn = await asyncpg.connect(dsn)
        feeder = Feeder(dsn)
        feeding = asyncio.create_task(feeder.run(), name="bench-feeder")
        try:
            with ops.start_worker(ctx, label, dsn, concurrency=concurrency) as worker:

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
                await wait_for(run_over, duration_s + 60, "the sustained run", poll_s=0.25)
        finally:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
        try:
            await conn.execute("ANALYZE pgqueue.jobs")  # fresh statistics for a sane plan
            rows = await conn.fetch(WINDOWS, handlers.NOOP, windows * WINDOW_S, WINDOW_S, t0)
        finally:
            await conn.close()
    counts = {row["window"]: row["jobs"] for row in rows}
    return _Run([counts.get(n, 0) / WINDOW_S for n in range(windows)], feeder.lowest_backlog)


async def run(ctx: Context) -> dict[str, Any]:
    """Run the sustained run `sustained_runs` times; report the median run by its ratio."""
    concurrency = (
        ctx.config.sustained_concurrency
        or ctx.figures.get("throughput_best_concurrency")
        or DEFAULT_CONCURRENCY
    )
    runs: list[_Run] = []
    for n in range(ctx.config.sustained_runs):
        ctx.say(
            f"sustained: run {n + 1}, {ctx.config.sustained_s:.0f}s at concurrency {concurrency}..."
        )
        one = await _one_run(ctx, f"sustained-{n + 1}", concurrency)
        ctx.say(
            f"sustained: run {n + 1}: first {one.first:.0f} jobs/s, last {one.last:.0f}, "
            f"ratio {one.ratio:.3f}, mean {one.mean:.0f} "
            f"({one.jobs} jobs; lowest backlog {one.lowest_backlog})"
        )
        runs.append(one)
    median = sorted(runs, key=lambda r: r.ratio)[len(runs) // 2]
    ctx.say("sustained: median run, jobs/s per 5 s: " + ", ".join(f"{r:.0f}" for r in median.rates))
    return {
        "sustained_first5_jobs_s": round(median.first),
        "sustained_last5_jobs_s": round(median.last),
        "sustained_mean_jobs_s": round(median.mean),
        "sustained_last_vs_first": round(median.ratio, 3),
        "sustained_runs_last_vs_first": [round(r.ratio, 3) for r in runs],
        "sustained_windows_jobs_s": [round(r) for r in median.rates],
        "sustained_s": ctx.config.sustained_s,
        "sustained_concurrency": concurrency,
        "sustained_jobs": median.jobs,
        "sustained_lowest_backlog": min(
            (r.lowest_backlog for r in runs if r.lowest_backlog is not None), default=None
        ),
    }
