"""Migrations go up, down and up again; the claim is served by its index."""

from __future__ import annotations

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgqueue import queries, schema
from tests.schema.catalog import catalog_of
from tests.support import db
from tests.support.processes import ROOT


def _head() -> str:
    """The newest revision of the chain (the app's own revisions come after pgqueue's)."""
    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    assert head is not None
    return head


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


async def _versions(url: str) -> tuple[str | None, int]:
    """alembic's revision and pgqueue's own schema version."""
    conn = await asyncpg.connect(url)
    try:
        revision = None
        if await conn.fetchval("SELECT to_regclass('alembic_version')") is not None:
            revision = await conn.fetchval("SELECT version_num FROM alembic_version")
        return revision, await schema.current_version(conn)
    finally:
        await conn.close()


def _without_alembic(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    # alembic's own table, its columns and its key: (schema, name, ...) rows in public.
    return [
        r
        for r in rows
        if not (len(r) > 1 and r[0] == "public" and str(r[1]).startswith("alembic_"))
    ]


async def test_upgrade_downgrade_upgrade(admin_url: str) -> None:
    name = db.unique_name("migr")
    await db.create_database(admin_url, name)
    url = db.with_database(admin_url, name)
    try:
        db.migrate(url)
        assert "pgqueue.jobs" in await _tables(url)
        assert await _versions(url) == (_head(), schema.LATEST)
        head = await catalog_of(url)
        db.migrate(url, "downgrade", "0002_service")
        assert await _versions(url) == ("0002_service", 1)
        db.migrate(url, "downgrade", "base")
        assert await _tables(url) == {"public.alembic_version"}
        assert await _versions(url) == (None, 0)
        db.migrate(url)
        assert await catalog_of(url) == head
    finally:
        await db.drop_database(admin_url, name)


async def test_alembic_and_the_runner_build_the_same_schema(admin_url: str) -> None:
    names = [db.unique_name("migr") for _ in range(2)]
    urls = [db.with_database(admin_url, name) for name in names]
    try:
        for name in names:
            await db.create_database(admin_url, name)
        db.migrate(urls[0], "upgrade", "0001_pgqueue")
        conn = await asyncpg.connect(urls[1])
        try:
            await schema.upgrade(conn, to=1)
        finally:
            await conn.close()
        by_alembic, by_runner = await catalog_of(urls[0]), await catalog_of(urls[1])
        assert {kind: _without_alembic(rows) for kind, rows in by_alembic.items()} == by_runner
    finally:
        for name in names:
            await db.drop_database(admin_url, name)


async def test_a_database_of_the_old_chain_is_adopted(admin_url: str) -> None:
    name = db.unique_name("migr")
    await db.create_database(admin_url, name)
    url = db.with_database(admin_url, name)
    try:
        # What revisions 0001_pgqueue and 0002_service made before pgqueue kept a record:
        # the same DDL, with no pgqueue.schema_version.
        db.migrate(url, "upgrade", "0002_service")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP TABLE pgqueue.schema_version")
            await conn.execute("INSERT INTO pgqueue.jobs (kind) VALUES ('kept')")
        finally:
            await conn.close()
        assert await _versions(url) == ("0002_service", 1)
        db.migrate(url)
        assert await _versions(url) == (_head(), schema.LATEST)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT kind FROM pgqueue.job_status") == "kept"
        finally:
            await conn.close()
        db.migrate(url, "downgrade", "base")
        assert await _tables(url) == {"public.alembic_version"}
    finally:
        await db.drop_database(admin_url, name)


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
        # $1 queues, $2 limit, $3 worker id, $4 lease seconds, $5 the kinds the worker knows.
        args = (["default"], 10, "w", 30.0, ["k"])
        rows = await conn.fetch("EXPLAIN " + queries.CLAIM_JOBS, *args)
    plan = "\n".join(r[0] for r in rows)
    assert "jobs_claim_idx" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan


async def test_the_job_listing_indexes_go_with_their_revisions(admin_url: str) -> None:
    name = db.unique_name("migr")
    await db.create_database(admin_url, name)
    url = db.with_database(admin_url, name)

    async def indexes() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'pgqueue'")
            return {r["indexname"] for r in rows}
        finally:
            await conn.close()

    listing = {"storyboard_jobs_project_idx", "storyboard_live_jobs_project_idx"}
    try:
        db.migrate(url)
        assert {*listing, "jobs_kind_idx"} <= await indexes()
        db.migrate(url, "downgrade", "0017_pgqueue_v13")
        assert not listing & await indexes()
        assert "jobs_kind_idx" in await indexes()
        db.migrate(url, "downgrade", "0016_pgqueue_v12")
        assert "jobs_kind_idx" not in await indexes()
        db.migrate(url)
        assert {*listing, "jobs_kind_idx"} <= await indexes()
    finally:
        await db.drop_database(admin_url, name)
