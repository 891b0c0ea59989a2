"""Fixtures: a real Postgres, one migrated template, a fresh database per test; the process
harness and the fake upstream of tests/support/."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgqueue import Queue
from tests.support import db, settings
from tests.support.processes import Processes
from tests.support.upstream import FakeUpstream, running


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    # Library classes and the service's settings take explicit arguments in tests: a
    # developer's PGQUEUE_*, DATABASE_URL, IMAGE_* or MEDIA_DIR must not leak in.
    saved = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith("PGQUEUE_") and k != "PGQUEUE_TEST_EMBEDDED")
        or k in settings.SERVICE_VARIABLES
    }
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """The URL of the server's `postgres` database (TEST_DATABASE_URL, :5432 or embedded)."""
    prefer_embedded = os.environ.get("PGQUEUE_TEST_EMBEDDED") == "1"
    url, server = asyncio.run(db.find_server(prefer_embedded=prefer_embedded))
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def databases(admin_url: str) -> Iterator[db.Databases]:
    """Fresh databases cloned from one template migrated at the start of the session."""
    handed_out = db.Databases(admin_url)
    asyncio.run(handed_out.template())
    yield handed_out
    asyncio.run(handed_out.close())


@pytest.fixture(scope="session")
def template_db(databases: db.Databases) -> str:
    """The name of the migrated template database."""
    return asyncio.run(databases.template())


@pytest.fixture
async def db_url(databases: db.Databases) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    url = await databases.create()
    yield url
    await databases.drop(url)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test's database."""
    async with asyncpg.create_pool(db_url, min_size=1, max_size=10) as p:
        yield p


@pytest.fixture
def queue(pool: asyncpg.Pool) -> Queue:
    """A Queue on the test's database."""
    return Queue(pool)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Child processes of this test, logging to tmp_path; all killed when the test ends.

    Their log tails go to stderr at the end, which pytest shows when the test failed.
    """
    harness = Processes(tmp_path)
    try:
        yield harness
    finally:
        harness.close()
        if harness.started:
            sys.stderr.write(harness.logs() + "\n")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A fake image upstream on loopback (set `latency_s`, `image`, `script` as needed)."""
    with running() as server:
        yield server
