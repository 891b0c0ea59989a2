"""The SQL interface (schema version 11): `pgqueue.enqueue`, `cancel`, `retry`, finished
notifications, and a role that may only enqueue, from asyncpg, psql and an app's trigger.

Every worker here polls every 30 s, so a job started within a second was woken by a NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from pgqueue import JobContext, Queue, Registry, Worker
from tests.integration.conftest import WorkerFactory
from tests.support import db
from tests.support.wait import wait_for

PASSWORD = "enqueue-only-0123"  # a test role's: the embedded server asks for one
SLOW_POLL_S = 30.0
PROMPT_S = 1.0  # far below the poll: only a notification explains a start this soon

# One table of cases for both ways in: `Queue.enqueue`'s keyword arguments. Each must give the
# same row from Python and from SQL, or be refused by both.
AT = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("bare", {}, True),
    ("payload with nulls", {"payload": {"a": None, "b": [1, None]}}, True),
    ("queue and priority", {"queue": "mail", "priority": -5}, True),
    ("run_at", {"run_at": AT}, True),
    ("delay", {"delay": timedelta(minutes=5)}, True),
    ("run_at and delay", {"run_at": AT, "delay": timedelta(seconds=1)}, False),
    ("max_attempts", {"max_attempts": 7}, True),
    ("max_attempts 0", {"max_attempts": 0}, False),
    ("timeout", {"timeout": timedelta(seconds=90)}, True),
    ("timeout 0", {"timeout": timedelta(0)}, False),
    ("concurrency", {"concurrency_key": "c", "concurrency_limit": 2}, True),
    ("concurrency without limit", {"concurrency_key": "c"}, False),
    ("concurrency limit 0", {"concurrency_key": "c", "concurrency_limit": 0}, False),
    ("rate-limit key", {"rate_limit_key": "upstream"}, True),
    ("rate-limit key too long", {"rate_limit_key": "r" * 201}, False),
    ("fairness", {"fairness_key": "user:ann", "fairness_weight": 2.5}, True),
    ("weight without key", {"fairness_weight": 2.0}, False),
    ("weight 0", {"fairness_key": "user:ann", "fairness_weight": 0.0}, False),
    ("budget", {"cost": Decimal("1.25"), "budget_keys": ["user:ann", "team:a"]}, True),
    ("budget without cost", {"budget_keys": ["user:ann"]}, False),
    ("empty budget key", {"cost": Decimal(1), "budget_keys": [""]}, False),
    ("nine budget keys", {"cost": Decimal(1), "budget_keys": [f"k{i}" for i in range(9)]}, False),
    ("negative cost", {"cost": Decimal(-1)}, False),
    ("notify_finished", {"notify_finished": True}, True),
    ("kind too long", {"kind": "k" * 129}, False),
    ("empty queue", {"queue": ""}, False),
]
# Columns that differ between two enqueues of one case by nature.
OWN_COLUMNS = {"id", "created_at", "run_at", "idempotency_key"}


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


def _sql_call(kind: str, args: dict[str, Any]) -> tuple[str, list[Any]]:
    names, values = [], []
    for name, value in args.items():
        values.append(json.dumps(value) if name == "payload" else value)
        cast = "::jsonb" if name == "payload" else ""
        names.append(f"{name} => ${len(values) + 1}{cast}")
    return f"SELECT pgqueue.enqueue(kind => $1{''.join(', ' + n for n in names)})", [kind, *values]


async def _enqueue_sql(conn: asyncpg.Connection, args: dict[str, Any]) -> int:
    args = dict(args)
    kind = args.pop("kind", "sql.case")
    statement, values = _sql_call(kind, args)
    job_id: int = await conn.fetchval(statement, *values)
    return job_id


async def _row(conn: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT *, run_at - created_at AS lag FROM pgqueue.jobs WHERE id = $1", job_id
    )
    assert row is not None
    return dict(row)


@pytest.mark.parametrize(("name", "args", "accepted"), CASES, ids=[c[0] for c in CASES])
async def test_python_and_sql_enqueue_agree(
    pool: asyncpg.Pool, name: str, args: dict[str, Any], accepted: bool
) -> None:
    queue = Queue(pool)
    python_args = {"kind": "sql.case", **args}
    async with pool.acquire() as conn:
        if not accepted:
            with pytest.raises((ValueError, asyncpg.PostgresError)):
                await queue.enqueue(**python_args)
            with pytest.raises(asyncpg.PostgresError):
                await _enqueue_sql(conn, args)
            assert await conn.fetchval("SELECT count(*) FROM pgqueue.jobs") == 0
            return
        from_python = await _row(conn, (await queue.enqueue(**python_args)).id)
        from_sql = await _row(conn, await _enqueue_sql(conn, args))
    if "run_at" in args:
        assert from_python["run_at"] == from_sql["run_at"] == AT
    else:  # now() (+ the delay) of each enqueue's own transaction
        assert abs(from_python["lag"] - from_sql["lag"]) < timedelta(seconds=1)
        assert abs(from_python["lag"] - args.get("delay", timedelta(0))) < timedelta(seconds=1)
    differing = {
        column
        for column in from_python
        if column not in OWN_COLUMNS | {"lag"} and from_python[column] != from_sql[column]
    }
    assert not differing, {c: (from_python[c], from_sql[c]) for c in differing}


async def test_a_repeated_key_returns_the_existing_job(conn: asyncpg.Connection) -> None:
    first = await conn.fetchval("SELECT pgqueue.enqueue('k', idempotency_key => 'once')")
    again = await conn.fetchval(
        "SELECT pgqueue.enqueue('k', '{\"other\": 1}', idempotency_key => 'once')"
    )
    python = await Queue(conn).enqueue("k", idempotency_key="once")
    assert first == again == python.id and not python.is_new
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.jobs") == 1


async def test_racing_transactions_with_one_key_make_one_job(db_url: str) -> None:
    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        first = await a.fetchval("SELECT pgqueue.enqueue('k', idempotency_key => 'race')")
        # b's insert waits for a's commit, then finds a's job.
        second = asyncio.ensure_future(
            b.fetchval("SELECT pgqueue.enqueue('k', idempotency_key => 'race')")
        )
        waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
        pid = b.get_server_pid()
        await wait_for(lambda: a.fetchval(waiting, pid), timeout=5, message="b to wait for a")
        assert not second.done()
        await ta.commit()
        assert await asyncio.wait_for(second, 5) == first
        await tb.commit()
    finally:
        await a.close()
        await b.close()


async def test_cancel_and_retry_say_whether_they_changed_the_job(conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval("SELECT pgqueue.enqueue('k')")
    assert await conn.fetchval("SELECT pgqueue.retry($1)", job_id) is False  # queued
    assert await conn.fetchval("SELECT pgqueue.cancel($1)", job_id) is True
    assert await conn.fetchval("SELECT pgqueue.cancel($1)", job_id) is False  # ended already
    status = await conn.fetchrow("SELECT * FROM pgqueue.job_status WHERE id = $1", job_id)
    assert status["state"] == "cancelled" and status["last_error"] == "cancelled before it ran"
    assert await conn.fetchval("SELECT pgqueue.retry($1)", job_id) is True
    assert await conn.fetchval("SELECT state FROM pgqueue.jobs WHERE id = $1", job_id) == "queued"
    assert await conn.fetchval("SELECT pgqueue.cancel(424242)") is False


def _registry(started: dict[int, float]) -> Registry:
    registry = Registry()

    @registry.handler("sql.job")
    async def job(ctx: JobContext) -> dict[str, Any]:
        started[ctx.job.id] = time.monotonic()
        return {"doubled": 2 * ctx.payload["n"]}

    return registry


async def _idle(worker: Worker) -> None:
    await wait_for(lambda: worker.listener_pid is not None and worker.idle.is_set())


async def test_psql_enqueue_wakes_workers_at_commit_and_the_result_reads_back(
    db_url: str, running_worker: WorkerFactory, conn: asyncpg.Connection
) -> None:
    started: dict[int, float] = {}
    async with running_worker(_registry(started), poll_interval_s=SLOW_POLL_S) as worker:
        await _idle(worker)
        enqueued = time.monotonic()
        done = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", db_url],
            input="BEGIN;\n"
            "SELECT pgqueue.enqueue(kind => 'sql.job', payload => '{\"n\": 21}',"
            " queue => 'default');\n"
            "COMMIT;\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        job_id = int(done.stdout.split()[0])
        await wait_for(lambda: job_id in started, timeout=5, message="the job to start")
        assert started[job_id] - enqueued < PROMPT_S + 0.5  # psql's own start included

        async def finished() -> asyncpg.Record | None:
            row = await conn.fetchrow(
                "SELECT state, result FROM pgqueue.job_status WHERE id = $1", job_id
            )
            return row if row is not None and row["state"] == "succeeded" else None

        row = await wait_for(finished, timeout=5, message="the job to succeed")
    assert json.loads(row["result"]) == {"doubled": 42}


async def test_an_app_trigger_enqueues_in_the_same_transaction(
    db_url: str, running_worker: WorkerFactory, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        """
        CREATE TABLE public.orders (id serial PRIMARY KEY, n integer NOT NULL);
        CREATE FUNCTION public.enqueue_order() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pgqueue.enqueue(kind => 'sql.job', payload => jsonb_build_object('n', NEW.n),
                                    idempotency_key => 'order:' || NEW.id);
            RETURN NULL;
        END $$;
        CREATE TRIGGER orders_enqueue AFTER INSERT ON public.orders
            FOR EACH ROW EXECUTE FUNCTION public.enqueue_order();
        """
    )
    async with conn.transaction():
        await conn.execute("INSERT INTO public.orders (n) VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM pgqueue.jobs") == 1  # same transaction
        rollback = conn.transaction()
        await rollback.start()
        await conn.execute("INSERT INTO public.orders (n) VALUES (2)")
        await rollback.rollback()  # a rolled-back order enqueues nothing
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.jobs") == 1
    started: dict[int, float] = {}
    async with running_worker(_registry(started), poll_interval_s=SLOW_POLL_S) as worker:
        await _idle(worker)
        await conn.execute("INSERT INTO public.orders (n) VALUES (3)")
        await wait_for(lambda: len(started) == 2, timeout=5, message="both order jobs to start")


async def test_a_job_that_asked_notifies_its_end(
    db_url: str, running_worker: WorkerFactory, conn: asyncpg.Connection
) -> None:
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("pgqueue_finished", lambda *a: heard.put_nowait(json.loads(a[3])))
    try:
        quiet = await conn.fetchval("SELECT pgqueue.enqueue('sql.job', '{\"n\": 1}')")
        loud = await conn.fetchval(
            "SELECT pgqueue.enqueue('sql.job', '{\"n\": 2}', notify_finished => true)"
        )
        cancelled = await Queue(conn).enqueue("sql.job", {"n": 3}, notify_finished=True)
        await Queue(conn).cancel(cancelled.id)
        assert await asyncio.wait_for(heard.get(), 5) == {
            "id": cancelled.id, "queue": "default", "kind": "sql.job", "state": "cancelled",
        }  # fmt: skip
        started: dict[int, float] = {}
        async with running_worker(_registry(started), poll_interval_s=SLOW_POLL_S):
            message = await asyncio.wait_for(heard.get(), 5)
            assert message == {"id": loud, "queue": "default", "kind": "sql.job",
                               "state": "succeeded"}  # fmt: skip
            await wait_for(lambda: quiet in started, timeout=5)

            async def quiet_ended() -> bool:
                state = await conn.fetchval("SELECT state FROM pgqueue.jobs WHERE id = $1", quiet)
                return bool(state == "succeeded")

            await wait_for(quiet_ended, timeout=5, message="the quiet job to succeed")
        # Notifications arrive in commit order: had `quiet`'s end notified, it would come
        # before this marker's, which commits after it.
        marker = await Queue(conn).enqueue("sql.job", {"n": 4}, notify_finished=True)
        await Queue(conn).cancel(marker.id)
        assert (await asyncio.wait_for(heard.get(), 5))["id"] == marker.id
        assert heard.empty()
    finally:
        await listener.close()


async def test_a_role_that_may_only_enqueue_and_read_status(
    db_url: str, conn: asyncpg.Connection
) -> None:
    role = db.unique_name("enqueuer")
    # The grants of docs/sql.md, as they are written there.
    await conn.execute(
        f"""
        CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}';
        GRANT USAGE ON SCHEMA pgqueue TO {role};
        GRANT EXECUTE ON FUNCTION pgqueue.enqueue, pgqueue.cancel, pgqueue.retry TO {role};
        GRANT SELECT ON pgqueue.job_status TO {role};
        """
    )
    limited = await asyncpg.connect(db.with_user(db_url, role, PASSWORD))
    try:
        job_id = await limited.fetchval("SELECT pgqueue.enqueue('k', '{\"n\": 1}')")
        state = await limited.fetchval("SELECT state FROM pgqueue.job_status WHERE id = $1", job_id)
        assert state == "queued"
        assert await limited.fetchval("SELECT pgqueue.cancel($1)", job_id) is True
        for statement in (
            "SELECT payload FROM pgqueue.jobs",
            "INSERT INTO pgqueue.jobs (kind) VALUES ('k')",
            "UPDATE pgqueue.jobs SET priority = 1",
            "SELECT * FROM pgqueue.enqueue_batch('[]', 'default', 3)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await limited.execute(statement)
    finally:
        await limited.close()
        await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_nobody_executes_the_owner_functions_without_a_grant(
    db_url: str, conn: asyncpg.Connection
) -> None:
    role = db.unique_name("stranger")
    await conn.execute(
        f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'; GRANT USAGE ON SCHEMA pgqueue TO {role}"
    )
    stranger = await asyncpg.connect(db.with_user(db_url, role, PASSWORD))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await stranger.fetchval("SELECT pgqueue.enqueue('k')")
    finally:
        await stranger.close()
        await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
