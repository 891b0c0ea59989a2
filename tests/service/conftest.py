"""Fixtures of the service tests: settings on the test's database, an API client, users,
and an in-process worker (the fake upstream is tests/conftest.py's `upstream`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from pgqueue import Worker, WorkerConfig
from service.jobs import create_registry
from service.settings import ServiceSettings
from tests.service import support
from tests.support.settings import WORKER_OPTIONS


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    """Where this test's images go."""
    return tmp_path / "media"


@pytest.fixture
def settings(db_url: str, media_dir: Path) -> ServiceSettings:
    """Service settings on the test's database, local images."""
    return ServiceSettings(database_url=db_url, media_dir=media_dir)


@pytest.fixture
async def client(settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the in-process API."""
    async with support.api_client(settings) as c:
        yield c


@pytest.fixture
def user(db_url: str) -> Callable[..., Awaitable[dict[str, str]]]:
    """`await user(name, tier=, admin=)` -> Authorization headers of a new token."""

    async def make(name: str = "alice", **options: object) -> dict[str, str]:
        return await support.bearer(db_url, name, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def alice(user: Callable[..., Awaitable[dict[str, str]]]) -> dict[str, str]:
    """Headers of user alice (free tier)."""
    return await user("alice")


@pytest.fixture
async def run_worker(db_url: str) -> AsyncIterator[Callable[..., Worker]]:
    """`run_worker(settings, concurrency=3)` starts an in-process worker, stopped at the end."""
    workers: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(worker_settings: ServiceSettings, *, concurrency: int = 3) -> Worker:
        config = WorkerConfig(concurrency=concurrency, **WORKER_OPTIONS)
        worker = Worker(db_url, create_registry(worker_settings), config)
        workers.append((worker, asyncio.get_running_loop().create_task(worker.run())))
        return worker

    yield start
    for worker, _ in workers:
        worker.stop(immediate=True)
    await asyncio.wait_for(asyncio.gather(*(task for _, task in workers)), timeout=10)
