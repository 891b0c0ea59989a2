"""Rate limits: set, remove and list the limits of rate-limit keys."""

from __future__ import annotations

from typing import Any

from pgqueue import models, queries
from pgqueue.store._common import Executor, _connection


async def set_rate_limit(db: Executor, key: str, limit: models.RateLimit) -> None:
    """Key `key` allows `limit` from now on, fixed (see `queries.SET_RATE_LIMIT`)."""
    async with _connection(db) as conn, conn.transaction():
        await conn.execute(queries.CLEAR_ADAPTIVE, key)
        await conn.execute(queries.SET_RATE_LIMIT, key, limit.limit, limit.period_s)


async def remove_rate_limit(db: Executor, key: str) -> None:
    """Key `key` has no limit any more; a throttle it carries still runs out."""
    async with _connection(db) as conn, conn.transaction():
        await conn.execute(queries.CLEAR_ADAPTIVE, key)
        await conn.execute(queries.REMOVE_RATE_LIMIT, key)


async def list_rate_limits(db: Executor) -> list[dict[str, Any]]:
    """Every key with a limit or a throttle (see `queries.LIST_RATE_LIMITS`)."""
    return [dict(record) for record in await db.fetch(queries.LIST_RATE_LIMITS)]
