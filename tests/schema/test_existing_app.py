"""`python -m pgqueue migrate` into an application's database that has its own alembic."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from pgqueue import schema
from tests.schema.catalog import added, catalog
from tests.support import processes

APP_SCHEMA = """
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('app_0042');
CREATE TABLE orders (id bigint PRIMARY KEY, job_id bigint);
INSERT INTO orders VALUES (1, NULL);
"""


def _listed(versions: range) -> str:
    """Versions as the CLI lists them: "1, 2, 3"."""
    return ", ".join(str(v) for v in versions)


def pgqueue_cli(url: str, *args: str) -> str:
    """Run `python -m pgqueue <args>` on `url`; returns its stdout (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        cwd=processes.ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_migrate_adds_only_pgqueue_and_leaves_alembic_alone(
    conn: asyncpg.Connection, empty_url: str
) -> None:
    await conn.execute(APP_SCHEMA)
    before = await catalog(conn)

    assert f"applied versions {_listed(range(1, schema.LATEST + 1))}" in pgqueue_cli(
        empty_url, "migrate"
    )
    after = await catalog(conn)
    new = added(before, after)
    assert new["schemas"] == [("pgqueue",)]
    for kind, rows in new.items():
        assert all(row[0] == "pgqueue" for row in rows), (kind, rows)
    assert not any(added(after, before).values())  # nothing of the app's changed or went away
    assert [tuple(r) for r in await conn.fetch("SELECT * FROM alembic_version")] == [("app_0042",)]
    assert pgqueue_cli(empty_url, "schema-version").strip() == str(schema.LATEST)

    # Twice is a no-op.
    assert "already up to date" in pgqueue_cli(empty_url, "migrate")
    assert await catalog(conn) == after

    # Down to 0 removes pgqueue's objects, and only those.
    assert f"reverted versions {_listed(range(schema.LATEST, 0, -1))}" in pgqueue_cli(
        empty_url, "migrate", "--downgrade-to", "0"
    )
    assert await catalog(conn) == before
    assert await conn.fetchval("SELECT version_num FROM alembic_version") == "app_0042"
    assert await conn.fetchval("SELECT count(*) FROM orders") == 1
    assert pgqueue_cli(empty_url, "schema-version").strip() == "0"


async def test_migrate_to_a_version_and_back(conn: asyncpg.Connection, empty_url: str) -> None:
    await conn.execute(APP_SCHEMA)
    assert "now at version 1" in pgqueue_cli(empty_url, "migrate", "--to", "1")
    v1 = await catalog(conn)
    pgqueue_cli(empty_url, "migrate")
    assert f"reverted versions {_listed(range(schema.LATEST, 1, -1))};" in pgqueue_cli(
        empty_url, "migrate", "--downgrade-to", "1"
    )
    assert await catalog(conn) == v1
    assert f"applied versions {_listed(range(2, schema.LATEST + 1))};" in pgqueue_cli(
        empty_url, "migrate"
    )
