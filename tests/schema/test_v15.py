"""Schema version 15 (claim marks) migrates in place from version 14 with jobs queued and
running: the queued ones are claimed, the running ones complete or go back to the queue and run;
down to version 14 and up again, the jobs queued meanwhile run too."""

from __future__ import annotations

import asyncio

import asyncpg

from pgqueue import JobContext, Registry, Worker, WorkerConfig, schema, store
from tests.support import settings

# -- queued: 30 jobs in two priorities, queued before the upgrade, some an hour old
QUEUE_JOBS = """
INSERT INTO pgqueue.jobs (queue, kind, priority, run_at)
SELECT 'default', 'k', (n % 2) * 5, now() - make_interval(secs => n * 60)
FROM generate_series(1, 30) AS n
"""

# -- take: 10 of them running, as a version-14 worker's claim left them
TAKE = """
UPDATE pgqueue.jobs
SET state = 'running', attempts = 1, worker_id = 'old-worker', started_at = now(),
    lease_token = nextval('pgqueue.lease_tokens'), lease_expires_at = now() + interval '1 hour'
WHERE id IN (SELECT id FROM pgqueue.jobs ORDER BY id LIMIT 10)
RETURNING id, lease_token
"""

# -- requeue: a running job back to the queue with its old run_at, as a retry puts it
REQUEUE = """
UPDATE pgqueue.jobs
SET state = 'queued', worker_id = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = ANY ($1::bigint[])
"""

STATES = "SELECT state::text, count(*) FROM pgqueue.jobs GROUP BY 1 ORDER BY 1"


async def _drain(url: str) -> None:
    registry = Registry()

    @registry.handler("k")
    async def k(ctx: JobContext) -> None:
        return None

    config = WorkerConfig(burst=True, **settings.WORKER_OPTIONS)
    await asyncio.wait_for(Worker(url, registry, config).run(), timeout=30)


async def test_upgrade_in_place_with_jobs_queued_and_running(
    conn: asyncpg.Connection, empty_url: str
) -> None:
    await schema.upgrade(conn, to=14)
    await conn.execute(QUEUE_JOBS)
    running = await conn.fetch(TAKE)
    await schema.upgrade(conn, to=15)
    marks = await conn.fetch("SELECT queue, priority FROM pgqueue.claim_marks ORDER BY 2")
    assert [(m["queue"], m["priority"]) for m in marks] == [("default", 0), ("default", 5)]
    # The old worker's handlers finish half their jobs; the other half go back to the queue.
    done = [store.Success(row["id"], row["lease_token"], "null") for row in running[:5]]
    assert await store.complete(conn, done) == {row["id"] for row in running[:5]}
    await conn.execute(REQUEUE, [row["id"] for row in running[5:]])
    await schema.upgrade(conn)  # and on to the latest version, which the draining worker needs
    await _drain(empty_url)
    assert [tuple(r) for r in await conn.fetch(STATES)] == [("succeeded", 30)]


async def test_down_and_up_again_with_jobs_queued(conn: asyncpg.Connection, empty_url: str) -> None:
    await schema.upgrade(conn, to=15)
    await conn.execute(QUEUE_JOBS)
    await schema.downgrade(conn, to=14)
    assert await conn.fetchval("SELECT to_regclass('pgqueue.claim_marks')") is None
    await schema.upgrade(conn)  # 15 again, and on to the latest, which the worker needs
    await _drain(empty_url)
    assert [tuple(r) for r in await conn.fetch(STATES)] == [("succeeded", 30)]
