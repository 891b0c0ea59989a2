"""Test databases: find a server, migrate a template once, clone it per test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devserver.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_DIR = ROOT / ".pgdata-test"


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def find_server() -> tuple[str, EmbeddedPostgres | None]:
    """The admin URL of the server to test on, and the embedded server if we started one.

    TEST_DATABASE_URL wins; then 127.0.0.1:5432 if it answers (unless PGQUEUE_TEST_EMBEDDED=1);
    else an embedded server under .pgdata-test/.
    """
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return explicit, None
    if os.environ.get("PGQUEUE_TEST_EMBEDDED") != "1" and asyncio.run(_answers(LOCAL_URL)):
        return LOCAL_URL, None
    server = EmbeddedPostgres(EMBEDDED_DIR, fast=True)
    return server.start(), server


def migrate(url: str, *args: str) -> None:
    """Run `python -m alembic <args>` against `url` (default: upgrade head)."""
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", *(args or ("upgrade", "head"))],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


async def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE name [TEMPLATE template]."""
    conn = await asyncpg.connect(admin_url)
    try:
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS name, disconnecting its sessions."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def unique_name(prefix: str) -> str:
    """A database name nobody else uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
