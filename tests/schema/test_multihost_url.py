"""Every command that takes DATABASE_URL takes a multi-host URL (`h1:p1,h2:p2`), as an HA
cluster is given: here its first host refuses connections (a dead primary), the second is the
test's server, and each command must find it. tests/chaos/test_failover.py runs the same URL
form against a real failover; this is the quick check of each entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import db, settings
from tests.support.ports import free_port
from tests.support.processes import completed, python_command


def multihost(url: str) -> str:
    """`url` behind a host nobody listens on, with `target_session_attrs=read-write`."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    hosts = f"127.0.0.1:{free_port()},{hostport}"
    netloc = f"{userinfo}@{hosts}" if userinfo else hosts
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _run(url: str, *args: str) -> str:
    done = completed(python_command(*args), env={**settings.child_env(), "DATABASE_URL": url})
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return done.stdout


@pytest.fixture
async def bare_url(databases: db.Databases) -> AsyncIterator[str]:
    """A database without any schema, on a multi-host URL."""
    url = await databases.create("multihost", migrated=False)
    yield multihost(url)
    await databases.drop(url)


async def test_every_entry_point_takes_a_multi_host_url(bare_url: str) -> None:
    # Migrations: pgqueue's own, then the whole project's through alembic (SQLAlchemy's URL
    # parser refuses "h1:p1,h2:p2"; env.py hands the URL to asyncpg instead).
    _run(bare_url, "-m", "pgqueue", "migrate")
    assert _run(bare_url, "-m", "pgqueue", "schema-version").strip()
    _run(bare_url, "-m", "alembic", "upgrade", "head")
    _run(bare_url, "-m", "alembic", "downgrade", "base")
    _run(bare_url, "-m", "alembic", "upgrade", "head")
    token = _run(bare_url, "-m", "service", "create-token", "--user", "ha").strip()
    assert token.splitlines()[-1]
    _run(
        bare_url,
        "-m",
        "pgqueue.worker",
        "service.jobs:registry",
        "--burst",
        "--max-seconds",
        "5",
    )
