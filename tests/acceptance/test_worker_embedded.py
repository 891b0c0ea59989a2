"""On the embedded server: the zero-setup path works, and a worker survives a Postgres restart."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devserver.embedded import EmbeddedPostgres
from pgqueue import JobSpec, Queue
from tests.acceptance.conftest import StartWorker
from tests.support import db
from tests.support.wait import wait_for


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A private embedded server (restarting it disturbs no other test), migrated."""
    server = EmbeddedPostgres(tmp_path / "pgdata", fast=True)
    url = server.start()
    try:
        db.migrate(url)
        yield server
    finally:
        server.stop()


async def _succeeded(url: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return -1  # the server is restarting
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM pgqueue.jobs WHERE state = 'succeeded'")
        return n
    finally:
        await conn.close()


async def test_worker_survives_a_postgres_restart(
    embedded: EmbeddedPostgres, start_worker: StartWorker
) -> None:
    async with asyncpg.create_pool(embedded.url, min_size=1, max_size=2) as pool:
        await Queue(pool).enqueue_many(
            [JobSpec(kind="sleep", payload={"s": 0.1}) for _ in range(30)]
        )
    worker = start_worker("--concurrency", "3", database_url=embedded.url)
    await wait_for(lambda: _at_least(embedded.url, 3), timeout=20)
    embedded.restart()
    await wait_for(lambda: _at_least(embedded.url, 30), timeout=60)
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    async with asyncpg.create_pool(embedded.url, min_size=1, max_size=2) as pool:
        assert (
            await pool.fetchval("SELECT count(*) FROM pgqueue.jobs WHERE state <> 'succeeded'") == 0
        )


async def _at_least(url: str, n: int) -> bool:
    return await _succeeded(url) >= n
