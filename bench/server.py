"""Where the benchmarks run: the server (as the tests choose it), a fresh database per scenario."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devserver.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_DIR = ROOT / ".pgdata-bench"
CONNECT_TIMEOUT_S = 2.0  # seconds to decide whether 127.0.0.1:5432 answers


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def find_server() -> tuple[str, EmbeddedPostgres | None]:
    """The admin URL to benchmark on, and the embedded server when we started one.

    BENCH_DATABASE_URL wins, then TEST_DATABASE_URL, then 127.0.0.1:5432 if it answers, else an
    embedded server (fsync off) under `.pgdata-bench/`.
    """
    for name in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name], None
    if await _answers(LOCAL_URL):
        return LOCAL_URL, None
    server = EmbeddedPostgres(EMBEDDED_DIR, fast=True)
    url = server.start()
    # Keep the data directory out of git without touching the repository's .gitignore.
    (EMBEDDED_DIR / ".gitignore").write_text("*\n")
    return url, server


class Databases:
    """Hands out fresh databases cloned from one template that alembic migrated.

    Args:
        admin_url: a URL of the server's maintenance database (`postgres`).
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._template: str | None = None

    async def _template_name(self) -> str:
        if self._template is None:
            name = f"bench_tmpl_{uuid.uuid4().hex[:10]}"
            await self._execute(f'CREATE DATABASE "{name}"')
            migrate(with_database(self.admin_url, name))
            self._template = name
        return self._template

    @contextlib.asynccontextmanager
    async def fresh(self, label: str, *, migrated: bool = True) -> AsyncIterator[str]:
        """A new database for one scenario (migrated unless told otherwise), dropped after."""
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        if migrated:
            template = await self._template_name()
            await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            await self._execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(self.admin_url, name)
        finally:
            await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def close(self) -> None:
        """Drop the template."""
        if self._template is not None:
            await self._execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
            self._template = None

    async def _execute(self, statement: str) -> None:
        # Database names are ours (label + random hex), never user input.
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def migrate(url: str) -> None:
    """`python -m alembic upgrade head` against `url`, as users run it."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


async def machine(admin_url: str) -> dict[str, object]:
    """What the figures were measured on."""
    conn = await asyncpg.connect(admin_url)
    try:
        server_version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        }
    finally:
        await conn.close()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "postgres": server_version,
        "postgres_settings": settings,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
