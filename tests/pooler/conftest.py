"""A server of this package's own, and a real PgBouncer in transaction mode in front of it.

The server is an embedded Postgres in a directory of ours (the tests restart it behind the
pooler, which they may not do to a shared one); PgBouncer is Debian's (`make test` installs it,
tools/system-deps.sh). Its pool is small, so clients share server connections as they do
behind Supabase's pooler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devserver.embedded import EmbeddedPostgres
from tests.support import db
from tests.support.pgbouncer import PgBouncer
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_ready

STARTUP_TIMEOUT_S = 30


@pytest.fixture(scope="package")
def server() -> Iterator[EmbeddedPostgres]:
    """An embedded Postgres for these tests alone (they restart it behind the pooler)."""
    with db.own_server("pooler") as postgres:
        yield postgres


@pytest.fixture(scope="package")
def bouncer(server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of `server`."""
    with PgBouncer(server.url) as pooler:
        yield pooler


@pytest.fixture
def direct_url(server: EmbeddedPostgres) -> str:
    """A fresh database of this test's own, not migrated, by its direct URL."""
    server.start()  # a test that restarted it may have left it down on failure
    name = db.unique_name("pooled")
    asyncio.run(db.create_database(server.url, name))
    return server.url_for(name)


@pytest.fixture
def pooled_url(bouncer: PgBouncer, direct_url: str) -> str:
    """The same database through the pooler."""
    return bouncer.url_for(direct_url)


def pooled_env(pooled_url: str, **extra: str) -> dict[str, str]:
    """DATABASE_URL through the pooler, in transaction mode."""
    return {"DATABASE_URL": pooled_url, "DATABASE_POOL_MODE": "transaction", **extra}


async def start_api(processes: Processes, env: dict[str, str], name: str = "api") -> str:
    """`python -m service api` on a free port; its base URL once ready."""
    port = free_port()
    process = processes.service("api", "--port", str(port), name=name, env=env)
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/readyz", process, timeout=STARTUP_TIMEOUT_S)
    return url
