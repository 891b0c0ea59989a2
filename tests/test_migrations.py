"""Migrations go up, down and up again; the claim is served by its index."""

from __future__ import annotations

import asyncpg

from pgqueue import queries
from tests import dbutil


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT schemaname || '.' || tablename AS name FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        return {r["name"] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_downgrade_upgrade(admin_url: str) -> None:
    name = dbutil.unique_name("migr")
    await dbutil.create_database(admin_url, name)
    url = dbutil.with_database(admin_url, name)
    try:
        dbutil.migrate(url)
        assert "pgqueue.jobs" in await _tables(url)
        dbutil.migrate(url, "downgrade", "base")
        assert await _tables(url) == {"public.alembic_version"}
        dbutil.migrate(url)
        assert "pgqueue.jobs" in await _tables(url)
    finally:
        await dbutil.drop_database(admin_url, name)


async def test_claim_uses_the_claim_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # Enough finished rows that a sequential scan would be the planner's worse choice.
        await conn.execute(
            "INSERT INTO pgqueue.jobs (kind, state, finished_at)"
            " SELECT 'k', 'succeeded', now() FROM generate_series(1, 20000)"
        )
        await conn.execute("INSERT INTO pgqueue.jobs (kind) SELECT 'k' FROM generate_series(1, 50)")
        await conn.execute("ANALYZE pgqueue.jobs")
        # Plain EXPLAIN plans the UPDATE without running it.
        rows = await conn.fetch("EXPLAIN " + queries.CLAIM_JOBS, ["default"], 10, "w", 30.0)
    plan = "\n".join(r[0] for r in rows)
    assert "jobs_claim_idx" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
