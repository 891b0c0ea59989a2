"""The worker daemon as users run it: CLI, burst, SIGTERM, kill -9 and restart, many workers."""

from __future__ import annotations

import asyncio
import json
import signal

import asyncpg
import pytest

from pgqueue import JobSpec, Queue
from tests.acceptance.conftest import StartWorker
from tests.support.processes import completed, python_command
from tests.support.wait import wait_for


async def _count(pool: asyncpg.Pool, where: str) -> int:
    n: int = await pool.fetchval(f"SELECT count(*) FROM pgqueue.jobs WHERE {where}")
    return n


def test_help_and_bad_arguments() -> None:
    command = python_command("-m", "pgqueue.worker")
    shown = completed([*command, "--help"])
    assert shown.returncode == 0
    for flag in ("--concurrency", "--queue", "--burst", "MODULE:ATTR"):
        assert flag in shown.stdout
    bad = completed(
        [*command, "no_colon_here"],
        env={"DATABASE_URL": "postgresql://127.0.0.1:1/none", "PATH": ""},
    )
    assert bad.returncode == 2 and "MODULE:ATTR" in bad.stderr


async def test_burst_drains_the_queue_and_exits(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker
) -> None:
    await queue.enqueue_many([JobSpec(kind="noop") for _ in range(200)])
    await queue.enqueue("noop", queue="not-mine")
    worker = start_worker("--burst", "--concurrency", "10")
    await worker.exited(30, expect=0)
    assert await _count(pool, "state = 'succeeded'") == 200
    assert await _count(pool, "state = 'queued' AND queue = 'not-mine'") == 1


async def test_sigterm_releases_unfinished_jobs_without_spending_attempts(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker
) -> None:
    await queue.enqueue_many([JobSpec(kind="sleep", payload={"s": 60}) for _ in range(5)])
    worker = start_worker("--concurrency", "3", env={"PGQUEUE_SHUTDOWN_GRACE_S": "0.5"})
    await wait_for(lambda: _has(pool, "state = 'running'", 3), timeout=15)
    worker.send_signal(signal.SIGTERM)
    await worker.exited(10, expect=0)
    rows = await pool.fetch("SELECT state, attempts FROM pgqueue.jobs")
    assert [(r["state"], r["attempts"]) for r in rows] == [("queued", 0)] * 5


async def test_sigterm_lets_running_jobs_finish_within_the_grace(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker
) -> None:
    await queue.enqueue_many([JobSpec(kind="sleep", payload={"s": 1}) for _ in range(3)])
    worker = start_worker("--concurrency", "3", env={"PGQUEUE_SHUTDOWN_GRACE_S": "20"})
    await wait_for(lambda: _has(pool, "state = 'running'", 3), timeout=15)
    worker.send_signal(signal.SIGTERM)
    await worker.exited(15, expect=0)
    assert await _count(pool, "state = 'succeeded'") == 3


async def _has(pool: asyncpg.Pool, where: str, n: int) -> bool:
    return await _count(pool, where) == n


async def test_kill_9_then_restart_recovers_every_job_once(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker, side_tables: None
) -> None:
    await queue.enqueue_many([JobSpec(kind="effect", payload={"s": 2}) for _ in range(6)])
    first = start_worker("--concurrency", "3")
    await wait_for(lambda: _has(pool, "state = 'running'", 3), timeout=15)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start_worker("--concurrency", "3")
    await wait_for(lambda: _has(pool, "state = 'succeeded'", 6), timeout=40)
    assert await _count(pool, "state = 'running'") == 0
    per_job = await pool.fetch("SELECT job_id, count(*) AS n FROM effects GROUP BY job_id")
    assert len(per_job) == 6 and all(r["n"] == 1 for r in per_job)
    # The three jobs the killed worker held were reaped: their lost attempt counts.
    assert await _count(pool, "attempts = 2") == 3
    # Their lost attempts' errors are in the history (a success shows no current error).
    assert "lease expired" in (
        await pool.fetchval("SELECT string_agg(error, ' ') FROM pgqueue.attempts") or ""
    )
    second.send_signal(signal.SIGTERM)
    await second.exited(15, expect=0)


# 8 slots: one complete-and-claim statement in flight per worker; 32: two (the pipeline),
# with fewer workers to stay within the server's max_connections.
@pytest.mark.parametrize(("workers", "concurrency"), [(5, "8"), (3, "32")])
async def test_racing_workers_run_every_job_exactly_once_and_hold_the_key_cap(
    queue: Queue,
    pool: asyncpg.Pool,
    start_worker: StartWorker,
    side_tables: None,
    workers: int,
    concurrency: str,
) -> None:
    plain = [JobSpec(kind="effect") for _ in range(5000)]
    keyed = [
        JobSpec(
            kind="effect",
            payload={"s": 0.02},
            concurrency_key=f"project-{i % 5}",
            concurrency_limit=3,
        )
        for i in range(150)
    ]
    await queue.enqueue_many(plain + keyed)
    started = [start_worker("--concurrency", concurrency, "--burst") for _ in range(workers)]
    for worker in started:
        await worker.exited(90, expect=0)
    assert await _count(pool, "state = 'succeeded'") == 5150
    assert await pool.fetchval("SELECT count(*) FROM effects") == 5150
    assert await pool.fetchval("SELECT count(DISTINCT job_id) FROM effects") == 5150
    assert (
        await pool.fetchval("SELECT count(DISTINCT worker_id) FROM effects") == workers
    )  # all took part
    assert await pool.fetchval("SELECT max(seen) FROM key_peaks") <= 3
    assert await pool.fetchval("SELECT sum(running) FROM pgqueue.concurrency_slots") == 0


async def test_worker_keeps_going_while_its_database_connections_are_killed(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker, db_url: str
) -> None:
    worker = start_worker("--concurrency", "3")
    await queue.enqueue_many([JobSpec(kind="sleep", payload={"s": 0.05}) for _ in range(60)])
    await wait_for(lambda: _count(pool, "state = 'succeeded'"), timeout=15)
    database = db_url.rsplit("/", 1)[1]
    for _ in range(3):
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name = ''",
            database,
        )
        await asyncio.sleep(0.2)
    await wait_for(lambda: _has(pool, "state = 'succeeded'", 60), timeout=40)
    assert worker.poll() is None  # still alive
    worker.send_signal(signal.SIGTERM)
    await worker.exited(15, expect=0)


async def test_settings_come_from_the_environment_and_logs_can_be_json(
    queue: Queue, pool: asyncpg.Pool, start_worker: StartWorker
) -> None:
    await queue.enqueue_many([JobSpec(kind="sleep", payload={"s": 0.3}) for _ in range(6)])
    await queue.enqueue("sleep", {"s": 0}, queue="side")
    worker = start_worker(
        "--burst",
        "--log-format",
        "json",
        env={"PGQUEUE_CONCURRENCY": "2", "PGQUEUE_QUEUES": '["default", "side"]'},
    )
    peak = 0
    while worker.poll() is None:
        peak = max(peak, await _count(pool, "state = 'running'"))
        await asyncio.sleep(0.02)
    assert worker.returncode == 0 and peak == 2
    assert await _count(pool, "state = 'succeeded'") == 7
    lines = [json.loads(line) for line in worker.output().splitlines()]
    done = [line for line in lines if line.get("action") == "job_succeeded"]
    assert len(done) == 7 and all(line["duration_s"] >= 0 and line["attempt"] == 1 for line in done)
