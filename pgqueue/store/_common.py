"""What every module of the store shares: the `Executor`, connections, rows to jobs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterable
from typing import TypeAlias

import asyncpg

from pgqueue import models

# A pool, or a connection (which joins whatever transaction its owner has open).
Executor: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


@contextlib.asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _jobs(records: Iterable[asyncpg.Record]) -> list[models.Job]:
    return models.Job.from_records(records if isinstance(records, list) else list(records))


def _job_or_none(record: asyncpg.Record | None) -> models.Job | None:
    return models.Job.from_record(record) if record is not None else None


def _milliseconds(seconds: float) -> str:
    # A setting's value as set_config takes it: whole milliseconds, at least one.
    return str(max(1, math.ceil(seconds * 1000)))
