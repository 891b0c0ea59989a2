"""Wake-ups: NOTIFY within milliseconds; a killed LISTEN connection comes back by itself."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from pgqueue import JobContext, Queue, Registry
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for


def _timing_registry(started: dict[int, float]) -> Registry:
    registry = Registry()

    @registry.handler("timed")
    async def timed(ctx: JobContext) -> None:
        started[ctx.job.id] = time.monotonic()

    return registry


async def test_notify_wakes_an_idle_worker_long_before_the_poll(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    started: dict[int, float] = {}
    async with running_worker(_timing_registry(started), poll_interval_s=30) as worker:
        await wait_for(lambda: worker.listener_pid is not None)
        await asyncio.sleep(0.1)  # the worker's first (empty) claim is over; it now sleeps
        enqueued = time.monotonic()
        job = await queue.enqueue("timed")
        await wait_for(lambda: job.id in started, timeout=5)
    assert started[job.id] - enqueued < 1.0  # the poll would have taken 30 s


async def test_listener_reconnects_after_its_backend_is_terminated(
    queue: Queue, running_worker: WorkerFactory, pool: asyncpg.Pool
) -> None:
    started: dict[int, float] = {}
    async with running_worker(_timing_registry(started), poll_interval_s=30) as worker:
        first_pid = await wait_for(lambda: worker.listener_pid)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        second_pid = await wait_for(
            lambda: worker.listener_pid not in (None, first_pid) and worker.listener_pid
        )
        assert second_pid != first_pid
        await asyncio.sleep(0.1)  # let the wake-up that follows a reconnection pass
        enqueued = time.monotonic()
        job = await queue.enqueue("timed")
        await wait_for(lambda: job.id in started, timeout=5)
    assert started[job.id] - enqueued < 1.0
