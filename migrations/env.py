"""Alembic environment: runs the SQL revisions against DATABASE_URL through asyncpg."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

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


def _database_url() -> str:
    url = _database().url
    # The revisions are plain SQL; the URL names the driver SQLAlchemy should use for them.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _connect_args() -> dict[str, object]:
    # Behind a transaction pooler neither asyncpg's statement cache nor SQLAlchemy's own may
    # keep named statements (see pgqueue.database).
    if _database().pooled:
        return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return {}


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(
        _database_url(), poolclass=pool.NullPool, connect_args=_connect_args()
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
