"""Operations on our queue that several scenarios share: the worker daemon, bulk enqueue,
figures from SQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import asyncpg

from bench.context import Context
from pgqueue import JobSpec, Queue
from tests.support.processes import Process

REGISTRY = "bench.handlers:registry"
WORKER_LOG_LEVEL = "WARNING"  # per-job INFO lines would be measured too; see README
ENQUEUE_CHUNK = 5_000  # specs per enqueue_many when filling a queue before a run

# -- throughput: first start to last finish of the succeeded jobs of one kind
THROUGHPUT = """
SELECT count(*) AS jobs,
       extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds
FROM pgqueue.jobs WHERE state = 'succeeded' AND kind = $1
"""

# -- count_in_state: how many jobs of one kind are in one state
COUNT_IN_STATE = """
SELECT count(*) FROM pgqueue.jobs WHERE kind = $1 AND state = $2::pgqueue.job_state
"""


def start_worker(
    ctx: Context,
    name: str,
    dsn: str,
    *,
    concurrency: int,
    burst: bool = False,
    env: Mapping[str, str] | None = None,
) -> Process:
    """The real daemon, `python -m pgqueue.worker bench.handlers:registry ...`, on `dsn`.

    It runs with the production defaults (no PGQUEUE_* of ours reaches it) unless `env` says
    otherwise; its log is `bench/.logs/<name>.log`. `with start_worker(...) as worker:` stops
    it (SIGTERM, then SIGKILL) on exit.
    """
    args = ["--concurrency", str(concurrency), "--log-level", WORKER_LOG_LEVEL]
    if burst:
        args.append("--burst")
    return ctx.processes.worker(
        REGISTRY, *args, name=name, env={"DATABASE_URL": dsn, **(env or {})}
    )


async def fill(dsn: str, kind: str, jobs: int, *, chunk: int = ENQUEUE_CHUNK) -> None:
    """Enqueue `jobs` jobs of `kind` with enqueue_many, `chunk` per call."""
    conn = await asyncpg.connect(dsn)
    try:
        queue = Queue(conn)
        for start in range(0, jobs, chunk):
            count = min(chunk, jobs - start)
            await queue.enqueue_many([JobSpec(kind=kind) for _ in range(count)])
    finally:
        await conn.close()


async def throughput(conn: asyncpg.Connection, kind: str) -> tuple[int, float]:
    """(jobs succeeded, seconds from the first start to the last finish)."""
    row = await conn.fetchrow(THROUGHPUT, kind)
    return int(row["jobs"]), float(row["seconds"] or 0.0)


async def count(conn: asyncpg.Connection, kind: str, state: str) -> int:
    """Jobs of `kind` in `state`."""
    value: int = await conn.fetchval(COUNT_IN_STATE, kind, state)
    return value


async def settle(ctx: Context) -> None:
    """Let the writes of earlier scenarios land before a timed run that commits per job.

    After the sustained run has written gigabytes of WAL, the kernel is still flushing dirty
    pages for tens of seconds, and a commit's WAL flush can wait 400 ms behind them: one such
    stall in a 5 s makespan run is an 8% miss that the queue did not cause. A CHECKPOINT (where
    the role may run one) and a sync put every run on a machine at rest.
    """
    conn = await asyncpg.connect(ctx.databases.admin_url)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # a role without the right: the sync below still helps
    finally:
        await conn.close()
    await asyncio.to_thread(os.sync)
