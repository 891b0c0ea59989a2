"""Fixtures of the schema tests: an empty database (no migrations) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support import db


@pytest.fixture
async def empty_url(admin_url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database for this test alone."""
    name = db.unique_name("schema")
    await db.create_database(admin_url, name)
    yield db.with_database(admin_url, name)
    await db.drop_database(admin_url, name)


@pytest.fixture
async def conn(empty_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the empty database."""
    connection = await asyncpg.connect(empty_url)
    yield connection
    await connection.close()
