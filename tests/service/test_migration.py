"""The service's revision goes down and up again cleanly, on top of pgqueue's."""

from __future__ import annotations

import asyncpg

from tests.support import db


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables "
            "WHERE table_schema IN ('storyboard', 'pgqueue')"
        )
    finally:
        await conn.close()
    return {r["name"] for r in rows}


async def test_upgrade_downgrade_upgrade(admin_url: str) -> None:
    name = db.unique_name("mig")
    await db.create_database(admin_url, name)
    url = db.with_database(admin_url, name)
    try:
        db.migrate(url)
        head = await _tables(url)
        assert {"storyboard.projects", "storyboard.storyboards", "storyboard.api_tokens"} <= head
        db.migrate(url, "downgrade", "0001_pgqueue")
        assert not any(t.startswith("storyboard.") for t in await _tables(url))
        assert "pgqueue.jobs" in await _tables(url)
        db.migrate(url)
        assert await _tables(url) == head
    finally:
        await db.drop_database(admin_url, name)
