"""The TypeScript `enqueue` (node-postgres) through PgBouncer in transaction mode: Node's test
runner runs clients/typescript/test/pooled.ts against a worker whose poll is too slow to
matter, so the commit's NOTIFY is what wakes it."""

from __future__ import annotations

import asyncpg

from tests.clients import node
from tests.clients.node import CLIENT_DIR
from tests.pooler.conftest import pooled_env
from tests.support import settings
from tests.support.processes import Processes, completed, python_command, run
from tests.support.wait import wait_for

SLOW_POLL_S = "30"  # the script waits 10 s at most: only the commit's NOTIFY is in time
NODE_TIMEOUT_S = 120.0


async def test_node_postgres_enqueues_through_the_pooler(
    processes: Processes, direct_url: str, pooled_url: str
) -> None:
    env = pooled_env(pooled_url, DATABASE_DIRECT_URL=direct_url)
    run(python_command("-m", "pgqueue", "migrate"), env={**settings.child_env(), **env})
    processes.worker(
        "examples.shot_briefs:registry",
        "--queue",
        "app",
        env={**settings.WORKER_ENV, **env, "PGQUEUE_POLL_INTERVAL_S": SLOW_POLL_S},
    )
    conn = await asyncpg.connect(direct_url)
    try:
        await wait_for(
            lambda: conn.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
            ),
            timeout=30,
            message="the worker to listen",
        )
    finally:
        await conn.close()

    done = completed(
        ["node", "--test", "test/pooled.ts"],
        env={**node.node_env(), "DATABASE_URL": direct_url, "POOLED_DATABASE_URL": pooled_url},
        cwd=CLIENT_DIR,
        timeout=NODE_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output + "\n" + processes.logs()
    assert "fail 0" in output and "pass 2" in output, output
