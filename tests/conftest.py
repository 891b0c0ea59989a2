"""Fixtures: a real Postgres, one migrated template, a fresh database per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from pgqueue import Queue
from tests import dbutil


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    # Library classes take explicit arguments; stray PGQUEUE_* settings must not leak in.
    saved = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PGQUEUE_") and k != "PGQUEUE_TEST_EMBEDDED"
    }
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """The URL of the server's `postgres` database (system, TEST_DATABASE_URL or embedded)."""
    url, server = dbutil.find_server()
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """A database migrated to head, cloned by every test."""
    name = dbutil.unique_name("pgqueue_tmpl")
    asyncio.run(dbutil.create_database(admin_url, name))
    dbutil.migrate(dbutil.with_database(admin_url, name))
    yield name
    asyncio.run(dbutil.drop_database(admin_url, name))


@pytest.fixture
async def db_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = dbutil.unique_name("t")
    await dbutil.create_database(admin_url, name, template=template_db)
    yield dbutil.with_database(admin_url, name)
    await dbutil.drop_database(admin_url, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test's database."""
    async with asyncpg.create_pool(db_url, min_size=1, max_size=10) as p:
        yield p


@pytest.fixture
def queue(pool: asyncpg.Pool) -> Queue:
    """A Queue on the test's database."""
    return Queue(pool)
