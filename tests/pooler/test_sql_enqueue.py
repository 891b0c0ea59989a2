"""The SQL interface through PgBouncer in transaction mode: an outside producer's transaction
enqueues with `pgqueue.enqueue`, and a worker (LISTEN on its direct URL) is woken at the commit."""

from __future__ import annotations

import time

import asyncpg

from tests.pooler.conftest import pooled_env
from tests.support import settings
from tests.support.processes import Processes, python_command, run
from tests.support.wait import wait_for

SLOW_POLL_S = "30"  # a job done within seconds was woken by the NOTIFY of the commit


async def test_an_enqueue_in_a_pooled_transaction_wakes_a_worker(
    processes: Processes, direct_url: str, pooled_url: str
) -> None:
    env = pooled_env(pooled_url, DATABASE_DIRECT_URL=direct_url)
    run(python_command("-m", "pgqueue", "migrate"), env={**settings.child_env(), **env})
    processes.worker(
        "tests.acceptance.handlers:registry",
        env={**settings.WORKER_ENV, **env, "PGQUEUE_POLL_INTERVAL_S": SLOW_POLL_S},
    )
    # What an outside client of a transaction pooler does: no prepared statements kept.
    producer = await asyncpg.connect(pooled_url, statement_cache_size=0)
    try:
        await wait_for(
            lambda: producer.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
            ),
            timeout=30,
            message="the worker to listen",
        )
        enqueued = time.monotonic()
        async with producer.transaction():
            job_id = await producer.fetchval(
                "SELECT pgqueue.enqueue(kind => 'noop', idempotency_key => 'pooled-1')"
            )
            again = await producer.fetchval(
                "SELECT pgqueue.enqueue(kind => 'noop', idempotency_key => 'pooled-1')"
            )
        assert again == job_id

        async def succeeded() -> bool:
            state = await producer.fetchval(
                "SELECT state FROM pgqueue.job_status WHERE id = $1", job_id
            )
            return bool(state == "succeeded")

        await wait_for(succeeded, timeout=10, message="the job to succeed")
        assert time.monotonic() - enqueued < 10 < float(SLOW_POLL_S)
    finally:
        await producer.close()
