"""procrastinate's side of the comparison; runs in the peers' venv (procrastinate + stdlib).

procrastinate fetches one job per statement, so its documented lever is the worker's
`concurrency` (the SETTING argument), with LISTEN/NOTIFY on; it runs here on uvloop too.
Jobs are kept after completion (`delete_jobs="never"`, the default) so that the figures can be
read from `procrastinate_events`. See runner_common.py for the commands.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import uvloop
from procrastinate import App, PsycopgConnector
from runner_common import PROBE, EnqueueOne, Peer, main

POOL_SPARE = 4  # connections beyond the concurrency: listener, heartbeat, aborts

_stamps: Any = None


def make_app(dsn: str, pool_size: int) -> App:
    """The app with its two tasks."""
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=1, max_size=pool_size))

    @app.task(name="noop")
    async def noop() -> None:
        if _stamps is not None:
            _stamps.write(f"{PROBE} {time.time()}\n")

    @app.task(name="latency")
    async def latency(seq: int) -> None:
        started = time.time()
        _stamps.write(f"{seq} {started}\n")

    return app


async def install(dsn: str) -> None:
    """Apply procrastinate's schema."""
    app = make_app(dsn, 2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue(dsn: str, jobs: int, batch: int) -> float:
    """Defer `jobs` no-ops with batch_defer_async, `batch` per call; jobs/s."""
    app = make_app(dsn, 2)
    async with app.open_async():
        task = app.tasks["noop"]
        started = time.perf_counter()
        for start in range(0, jobs, batch):
            await task.batch_defer_async(*([{}] * min(batch, jobs - start)))
        return jobs / (time.perf_counter() - started)


async def worker(dsn: str, concurrency: int, drain: bool, stamps_path: str | None) -> None:
    """One procrastinate worker; `drain` stops it once the queue is empty."""
    global _stamps
    _stamps = open(stamps_path, "a", buffering=1) if stamps_path else None  # noqa: SIM115
    app = make_app(dsn, concurrency + POOL_SPARE)
    try:
        async with app.open_async():
            await app.run_worker_async(concurrency=concurrency, wait=not drain, listen_notify=True)
    finally:
        if _stamps is not None:
            _stamps.close()


@contextlib.asynccontextmanager
async def client(dsn: str) -> AsyncIterator[EnqueueOne]:
    """One job per defer call."""
    app = make_app(dsn, 2)
    async with app.open_async():

        async def enqueue_one(seq: int) -> None:
            if seq == PROBE:
                await app.tasks["noop"].defer_async()
            else:
                await app.tasks["latency"].defer_async(seq=seq)

        yield enqueue_one


if __name__ == "__main__":
    main(Peer(install=install, enqueue=enqueue, worker=worker, client=client, run=uvloop.run))
