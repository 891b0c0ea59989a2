"""What a metrics scrape reads: the settled instant and the jobs finished since."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from pgqueue import queries


async def settled_before(conn: asyncpg.Connection, max_lag_s: float) -> datetime:
    """The instant before which every finished job has committed (or never will), at most
    `max_lag_s` ago: a scrape counts jobs finished up to here (see pgqueue.metrics)."""
    moment: datetime = await conn.fetchval(queries.SETTLED_BEFORE, max_lag_s)
    return moment


async def finished_between(
    conn: asyncpg.Connection, since: datetime, until: datetime, bounds: Sequence[float]
) -> list[asyncpg.Record]:
    """Jobs finished in [since, until) by queue, kind, state and duration bucket (`bounds`:
    the buckets' upper bounds): `jobs` and their summed `seconds`."""
    rows: list[asyncpg.Record] = await conn.fetch(
        queries.FINISHED_BETWEEN, since, until, list(bounds)
    )
    return rows
