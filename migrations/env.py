"""Alembic environment: runs the SQL revisions against DATABASE_URL through asyncpg."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pgqueue.database import Database

MISSING_DATABASE_URL = (
    "DATABASE_URL is not set: name the database to migrate, e.g. "
    "DATABASE_URL=postgresql://user@host:5432/app python -m alembic upgrade head"
)


def _database() -> Database:
    # No fallback on alembic.ini: a placeholder server silently migrated is worse than none.
    try:
        database = Database.from_environ(os.environ)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if database is None:
        # alembic prints a CommandError as one "FAILED: ..." line (other errors as tracebacks).
        raise CommandError(MISSING_DATABASE_URL)
    return database


# SQLAlchemy only names the dialect: its URL parser takes one `host:port`, and would refuse a
# multi-host URL (`postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write`) or rewrite
# what libpq's syntax allows, so asyncpg, which reads every form, connects from DATABASE_URL.
DIALECT_URL = "postgresql+asyncpg://"


def _engine() -> AsyncEngine:
    database = _database()
    # Behind a transaction pooler neither asyncpg's statement cache nor SQLAlchemy's own may
    # keep named statements (see pgqueue.database); `options()` turns asyncpg's off.
    cache = {"prepared_statement_cache_size": 0} if database.pooled else {}

    async def connect() -> asyncpg.Connection:
        return await database.connect()

    def creator() -> object:
        # What `async_creator` does, plus the adapter's own cache setting it cannot pass.
        dbapi: Any = engine.sync_engine.dialect.dbapi
        return dbapi.connect(async_creator_fn=connect, **cache)

    engine = create_async_engine(DIALECT_URL, poolclass=pool.NullPool, creator=creator)
    return engine


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = _engine()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _database()  # the same refusal without DATABASE_URL; the SQL needs only the dialect
    context.configure(url=DIALECT_URL, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
