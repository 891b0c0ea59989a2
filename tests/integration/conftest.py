"""A worker running in the test's event loop, stopped (and awaited) when the test ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgqueue import Registry, Worker, WorkerConfig
from tests.support.settings import WORKER_OPTIONS as FAST

WorkerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
def running_worker(db_url: str) -> WorkerFactory:
    """`async with running_worker(registry, **options) as worker:` runs a Worker meanwhile."""

    @contextlib.asynccontextmanager
    async def start(registry: Registry, **options: Any) -> AsyncIterator[Worker]:
        worker = Worker(db_url, registry, WorkerConfig(**{**FAST, **options}))
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=15)

    return start
