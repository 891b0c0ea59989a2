"""A database without pgqueue's schema, or with an older one: every way in says so and names the
command that fixes it, instead of a bare "relation does not exist" or a worker looping for ever."""

from __future__ import annotations

import sys

import asyncpg
import pytest

from pgqueue import Queue, SchemaMissing, schema
from tests.support import processes, settings

MIGRATE = "python -m pgqueue migrate"


@pytest.mark.parametrize("version", [0, schema.LATEST - 1])
async def test_a_burst_worker_exits_2_and_names_the_migration(
    empty_url: str, conn: asyncpg.Connection, version: int
) -> None:
    await schema.upgrade(conn, to=version)
    done = processes.completed(
        [sys.executable, "-m", "pgqueue.worker", "tests.acceptance.handlers:registry", "--burst"],
        env={**settings.child_env(), "DATABASE_URL": empty_url},
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert MIGRATE in done.stderr and "Traceback" not in done.stderr, done.stderr
    said = "no pgqueue schema" if version == 0 else f"schema version {version}"
    assert said in done.stderr


async def test_enqueue_names_the_migration(conn: asyncpg.Connection) -> None:
    queue = Queue(conn)
    with pytest.raises(SchemaMissing, match=r"python -m pgqueue migrate"):
        await queue.enqueue("email.send", {"to": "ann"})
    await schema.upgrade(conn, to=7)  # older: no fairness keys yet (version 8)
    with pytest.raises(SchemaMissing, match=r"older than version"):
        await queue.enqueue("email.send", {"to": "ann"}, fairness_key="user:ann")
    await schema.upgrade(conn)
    assert (await queue.enqueue("email.send", {"to": "ann"})).is_new
