"""PgQueuer's side of the comparison; runs in the peers' venv (pgqueuer + stdlib only).

The worker takes PgQueuer's documented fast path: the asyncpg driver, uvloop, and a large
dequeue `batch_size` (the SETTING argument). See runner_common.py for the commands.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import uvloop
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode
from runner_common import PROBE, EnqueueOne, Peer, main

NOOP = "noop"
LATENCY = "latency"


async def install(dsn: str) -> None:
    """Create PgQueuer's tables."""
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def enqueue(dsn: str, jobs: int, batch: int) -> float:
    """Enqueue `jobs` no-ops, `batch` per call (one round trip each); jobs/s."""
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        started = time.perf_counter()
        for start in range(0, jobs, batch):
            count = min(batch, jobs - start)
            await queries.enqueue([NOOP] * count, [None] * count, [0] * count)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def worker(dsn: str, batch_size: int, drain: bool, stamps_path: str | None) -> None:
    """One PgQueuer worker, until drained (or signalled)."""
    conn = await asyncpg.connect(dsn)
    stamps = open(stamps_path, "a", buffering=1) if stamps_path else None  # noqa: SIM115
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint(NOOP)
    async def noop(job: Job) -> None:
        if stamps is not None:
            stamps.write(f"{PROBE} {time.time()}\n")

    @pgq.entrypoint(LATENCY)
    async def latency(job: Job) -> None:
        started = time.time()
        assert stamps is not None and job.payload is not None
        stamps.write(f"{job.payload.decode()} {started}\n")

    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    try:
        await pgq.run(batch_size=batch_size, mode=mode, dequeue_timeout=timedelta(seconds=30))
    finally:
        if stamps is not None:
            stamps.close()
        await conn.close()


@contextlib.asynccontextmanager
async def client(dsn: str) -> AsyncIterator[EnqueueOne]:
    """One job per enqueue call, on one connection."""
    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))

    async def enqueue_one(seq: int) -> None:
        if seq == PROBE:
            await queries.enqueue(NOOP, None)
        else:
            await queries.enqueue(LATENCY, str(seq).encode())

    try:
        yield enqueue_one
    finally:
        await conn.close()


if __name__ == "__main__":
    main(Peer(install=install, enqueue=enqueue, worker=worker, client=client, run=uvloop.run))
