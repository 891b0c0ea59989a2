"""Per-user spend budgets: what a user may spend on the upstream per UTC day.

Each storyboard job costs `IMAGE_COST` credits and names its user's budget key; pgqueue's claim
reserves the cost and starts a shot only when it fits, so a user over budget has shots that
wait (`over_budget`), never fail, and start the next day or when the budget is raised. The
amount is the tier's (`BUDGET_FREE_PER_DAY`, `BUDGET_PRO_PER_DAY`; unset: no limit) unless
`python -m service budget --user NAME --per-day N` set one for that user.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from pgqueue import Queue
from service import queries
from service.settings import ServiceSettings

DAY_S = 86_400.0


def budget_key(user_name: str) -> str:
    """The pgqueue budget key of a user's upstream spend."""
    return f"user:{user_name}"


async def daily_amount(
    db: asyncpg.Pool | asyncpg.Connection, settings: ServiceSettings, user_name: str, tier: str
) -> Decimal | None:
    """What `user_name` may spend a day: their override, else their tier's (None: no limit)."""
    override = await db.fetchval(queries.USER_BUDGET_OVERRIDE, user_name)
    if override is not None:
        return Decimal(override)
    return settings.budget_per_day(tier)


async def apply(
    conn: asyncpg.Connection,
    queue: Queue,
    settings: ServiceSettings,
    user_name: str,
    tier: str,
) -> Decimal | None:
    """Make pgqueue's budget of `user_name` what it should be now, in `conn`'s transaction
    (a generate's, which holds a connection already: a second one from the pool could wait
    for ever on a pool its peers exhaust); returns the amount."""
    amount = await daily_amount(conn, settings, user_name, tier)
    if amount is None:
        await queue.remove_budget(budget_key(user_name), conn=conn)
    else:
        await queue.set_budget(budget_key(user_name), amount, period_s=DAY_S, conn=conn)
    return amount


async def set_override(
    pool: asyncpg.Pool, settings: ServiceSettings, user_name: str, per_day: Decimal | None
) -> Decimal | None:
    """`python -m service budget`: set (or with None clear) a user's own daily budget and
    apply it at once (parked shots start when it allows). Returns the amount now in force."""
    if per_day is None:
        await pool.execute(queries.CLEAR_USER_BUDGET_OVERRIDE, user_name)
    else:
        await pool.execute(queries.SET_USER_BUDGET_OVERRIDE, user_name, per_day)
    tier = await pool.fetchval(queries.USER_TIER, user_name) or "free"
    async with pool.acquire() as conn, conn.transaction():
        return await apply(conn, Queue(pool), settings, user_name, tier)
