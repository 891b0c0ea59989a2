"""Databases for tests and benchmarks: find a server, migrate a template once, clone it per use.

The server: the first of the given URL variables that is set (the tests: TEST_DATABASE_URL;
the bench: BENCH_DATABASE_URL, then TEST_DATABASE_URL), else 127.0.0.1:5432 if it answers,
else an embedded server (fsync off) of our own. `alembic upgrade head` migrates one template
database, as users migrate theirs; every test (every benchmark scenario) gets a fresh
`CREATE DATABASE ... TEMPLATE` clone of it, dropped afterwards.

Database names are ours (a prefix, a label and random hex), never user input: they are
quoted into the statements, which take no parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devserver.embedded import EmbeddedPostgres
from tests.support import processes, settings

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_VARIABLES = ("TEST_DATABASE_URL",)
TEST_EMBEDDED_DIR = processes.ROOT / ".pgdata-test"
CONNECT_TIMEOUT_S = 2.0  # seconds to decide whether a server answers


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def with_user(url: str, user: str, password: str) -> str:
    """`url` logging in as another role, with its password (the embedded server asks for one)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def database_of(url: str) -> str:
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/")


def unique_name(prefix: str) -> str:
    """A database name nobody else uses: `<prefix>_<12 hex digits>`."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def answers(url: str) -> bool:
    """Whether a server accepts a connection at `url` within CONNECT_TIMEOUT_S."""
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def find_server(
    variables: Sequence[str] = TEST_VARIABLES,
    embedded_dir: Path = TEST_EMBEDDED_DIR,
    *,
    prefer_embedded: bool = False,
) -> tuple[str, EmbeddedPostgres | None]:
    """The admin URL (of `postgres`) to work on, and the embedded server if we started one.

    Args:
        variables: environment variables naming a server's URL, the first set one wins.
        embedded_dir: the embedded server's data directory, when it comes to that.
        prefer_embedded: skip 127.0.0.1:5432 (`make test-embedded`).
    """
    for name in variables:
        if os.environ.get(name):
            return os.environ[name], None
    if not prefer_embedded and await answers(LOCAL_URL):
        return LOCAL_URL, None
    server = EmbeddedPostgres(embedded_dir, fast=True)
    url = await asyncio.to_thread(server.start)
    # Keep the data directory out of git without touching the repository's .gitignore.
    (embedded_dir / ".gitignore").write_text("*\n")
    return url, server


def migrate(url: str, *args: str) -> None:
    """`python -m alembic <args>` against `url` (default `upgrade head`), as users run it."""
    processes.run(
        processes.python_command("-m", "alembic", *(args or ("upgrade", "head"))),
        env={**settings.child_env(), "DATABASE_URL": url},
    )


async def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    """`CREATE DATABASE name [TEMPLATE template]` on the server of `admin_url`."""
    # FILE_COPY: copying a small template's files beats WAL-logging every block of it.
    clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    await _execute(admin_url, f'CREATE DATABASE "{name}"{clause}')


async def drop_database(admin_url: str, name: str) -> None:
    """`DROP DATABASE IF EXISTS name`, disconnecting its sessions."""
    await _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Databases:
    """Hands out fresh databases, cloned from one template that alembic migrated once.

    Args:
        admin_url: a URL of the server's maintenance database (`postgres`).
        prefix: starts every name (`<prefix>_tmpl_...`, `<prefix>_<label>_...`).

    Not safe for concurrent first use: create the template (`await template()`) before
    handing the object to concurrent callers.
    """

    def __init__(self, admin_url: str, prefix: str = "t") -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self._template: str | None = None

    async def template(self) -> str:
        """The migrated template's name (created and migrated on first use)."""
        if self._template is None:
            name = unique_name(f"{self.prefix}_tmpl")
            await create_database(self.admin_url, name)
            try:
                await asyncio.to_thread(migrate, with_database(self.admin_url, name))
            except BaseException:
                await drop_database(self.admin_url, name)
                raise
            self._template = name
        return self._template

    async def create(self, label: str = "", *, migrated: bool = True) -> str:
        """A new database (a clone of the template unless `migrated` is False); its URL."""
        name = unique_name(f"{self.prefix}_{label}" if label else self.prefix)
        template = await self.template() if migrated else None
        await create_database(self.admin_url, name, template=template)
        return with_database(self.admin_url, name)

    async def drop(self, url: str) -> None:
        """Drop the database `url` names."""
        await drop_database(self.admin_url, database_of(url))

    @contextlib.asynccontextmanager
    async def fresh(self, label: str = "", *, migrated: bool = True) -> AsyncIterator[str]:
        """`async with databases.fresh(label) as url:` a new database, dropped on exit."""
        url = await self.create(label, migrated=migrated)
        try:
            yield url
        finally:
            await self.drop(url)

    async def close(self) -> None:
        """Drop the template."""
        if self._template is not None:
            await drop_database(self.admin_url, self._template)
            self._template = None


@contextlib.contextmanager
def own_server(label: str) -> Iterator[EmbeddedPostgres]:
    """An embedded Postgres of the caller's alone (one it may stop and restart), removed after.

    Its directory is our own under /tmp, not pytest's tmp_path: another pytest session may
    chmod that root 0700, and the server's system user (when we run as root) would then be
    locked out of its data.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"pgqueue-{label}-", dir="/tmp"))
    postgres = EmbeddedPostgres(workdir / "pgdata", fast=True)
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
