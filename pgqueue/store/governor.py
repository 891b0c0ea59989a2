"""The governor: breakers, adaptive rates, budgets, and an attempt's upstream failure and cost."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pgqueue import models, queries
from pgqueue.store._common import Executor, _connection, _job_or_none
from pgqueue.store.outcomes import capped_delay_s


async def set_breaker(db: Executor, key: str, breaker: models.Breaker) -> None:
    """Key `key` gets `breaker` (its state, open or not, stays)."""
    await db.execute(queries.SET_BREAKER, key, breaker.threshold, breaker.window_s, breaker.open_s)


async def remove_breaker(db: Executor, key: str) -> None:
    """Key `key` has no breaker; its jobs held by an open one start again."""
    await db.execute(queries.REMOVE_BREAKER, key)


async def set_adaptive_rate(db: Executor, key: str, ceiling: int | None, period_s: float) -> None:
    """Key `key`'s rate is learnt over windows of `period_s`, at most `ceiling` a window."""
    await db.execute(queries.SET_ADAPTIVE_RATE, key, ceiling, period_s)


async def set_budget(db: Executor, key: str, amount: Decimal, period_s: float) -> None:
    """Budget `key` allows `amount` per `period_s`; wakes the queues of the jobs it parks."""
    await db.execute(queries.SET_BUDGET, key, amount, period_s)


async def remove_budget(db: Executor, key: str) -> None:
    """Budget `key` is gone; wakes the queues of the jobs it parked."""
    await db.execute(queries.REMOVE_BUDGET, key)


async def list_budgets(db: Executor, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The budgets `keys` (None: all), see `queries.LIST_BUDGETS`."""
    records = await db.fetch(queries.LIST_BUDGETS, None if keys is None else list(keys))
    return [dict(record) for record in records]


async def charge_attempt(db: Executor, job_id: int, lease_token: int, amount: Decimal) -> bool:
    """The running attempt of job `job_id` spent `amount` (fenced); False when the lease is
    no longer ours."""
    return await db.fetchval(queries.CHARGE_ATTEMPT, job_id, lease_token, amount) is not None


async def fail_upstream(
    db: Executor,
    job_id: int,
    lease_token: int,
    rate_limit_key: str,
    *,
    delay_s: float,
    error: str,
    progress_json: str | None,
) -> tuple[models.Job | None, bool]:
    """The handler's upstream failed transiently: the job fails its attempt (fenced) and the
    key's breaker counts it, in one transaction. While the breaker is open or probing, and for
    the failure that opens it, the attempt is given back and the job waits for the breaker
    instead of its backoff.

    Returns:
        The row written (None when the lease was lost) and whether the attempt was spared.
    """
    async with _connection(db) as conn, conn.transaction():
        spared = bool(await conn.fetchval(queries.UPSTREAM_FAILURE_IS_SPARED, rate_limit_key))
        if spared:
            record = await conn.fetchrow(
                queries.THROTTLE_JOB, job_id, lease_token, 0.0, error, progress_json
            )
        else:
            record = await conn.fetchrow(
                queries.FAIL_ATTEMPT,
                job_id,
                lease_token,
                True,
                capped_delay_s(delay_s),
                error,
                progress_json,
            )
        if record is None:
            return None, spared
        # After the job's own statement: the breaker's row is the last lock (see schema v8).
        await conn.fetchval(queries.RECORD_UPSTREAM_FAILURE, rate_limit_key, job_id)
        return _job_or_none(record), spared
