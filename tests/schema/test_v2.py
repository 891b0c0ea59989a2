"""Schema version 2: a freed concurrency slot notifies its queue; the job_status view."""

from __future__ import annotations

import asyncio

import asyncpg

from pgqueue import schema

INSERT = (
    "INSERT INTO pgqueue.jobs (queue, kind, concurrency_key, concurrency_limit)"
    " SELECT 'q', 'k', 'key', 1 FROM generate_series(1, $1) RETURNING id"
)
START = (
    "UPDATE pgqueue.jobs SET state = 'running', attempts = 1, lease_token = 1, worker_id = 'w',"
    " started_at = now(), lease_expires_at = now() + interval '30 s' WHERE id = ANY($1)"
)
FINISH = (
    "UPDATE pgqueue.jobs SET state = 'succeeded', lease_expires_at = NULL, finished_at = now()"
    " WHERE id = ANY($1)"
)


async def _listening(conn: asyncpg.Connection) -> asyncio.Queue[str]:
    received: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("pgqueue_jobs", lambda *args: received.put_nowait(args[3]))
    return received


async def _sent(received: asyncio.Queue[str], sender: asyncpg.Connection) -> list[str]:
    """What the sender's transactions notified so far: everything before a sentinel.

    Notifications from one session arrive in commit order, so once the sentinel is here,
    everything committed before it is too: no sleep decides that nothing came.
    """
    await sender.execute("SELECT pg_notify('pgqueue_jobs', 'sentinel')")
    payloads = []
    while (payload := await asyncio.wait_for(received.get(), timeout=5)) != "sentinel":
        payloads.append(payload)
    return payloads


async def test_a_freed_slot_notifies_the_queue_once_per_transaction(
    conn: asyncpg.Connection, empty_url: str
) -> None:
    await schema.upgrade(conn)
    listener = await asyncpg.connect(empty_url)
    try:
        received = await _listening(listener)
        ids = await conn.fetch(INSERT, 3)
        ids = [r["id"] for r in ids]
        # Since version 4 a plain INSERT notifies nobody (pgqueue's enqueue sends its own).
        assert await _sent(received, conn) == []
        await conn.execute(START, ids)
        assert await _sent(received, conn) == []  # taking a slot frees nothing
        await conn.execute(FINISH, ids)  # three slots freed in one transaction
        assert await _sent(received, conn) == ["q"]
        # A running job deleted (retention never does, an operator may) frees its slot too.
        more = [r["id"] for r in await conn.fetch(INSERT, 1)]
        await conn.execute(START, more)
        await _sent(received, conn)
        await conn.execute("DELETE FROM pgqueue.jobs WHERE id = ANY($1)", more)
        assert await _sent(received, conn) == ["q"]
        assert await conn.fetchval("SELECT running FROM pgqueue.concurrency_slots") == 0

        # Version 1 did not notify: the downgrade restores exactly that.
        await schema.downgrade(conn, to=1)
        again = [r["id"] for r in await conn.fetch(INSERT, 1)]
        await conn.execute(START, again)
        await _sent(received, conn)
        await conn.execute(FINISH, again)
        assert await _sent(received, conn) == []
    finally:
        await listener.close()


async def test_job_status_says_which_jobs_are_live(conn: asyncpg.Connection) -> None:
    await schema.upgrade(conn)
    await conn.execute("INSERT INTO pgqueue.jobs (kind) SELECT 'k' FROM generate_series(1, 4)")
    await conn.execute(  # 2: running, lease current; 3: running, lease lapsed; 4: finished
        "UPDATE pgqueue.jobs SET state = 'running', attempts = 1, lease_token = id,"
        " worker_id = 'w', started_at = now(),"
        " lease_expires_at = now() + CASE id WHEN 2 THEN interval '1 min'"
        " ELSE interval '-1 min' END WHERE id IN (2, 3)"
    )
    await conn.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', attempts = 1, finished_at = now(),"
        " last_error = 'boom' WHERE id = 4"
    )
    rows = await conn.fetch("SELECT id, state::text, is_live FROM pgqueue.job_status ORDER BY id")
    assert [tuple(r) for r in rows] == [
        (1, "queued", True),
        (2, "running", True),
        (3, "running", False),
        (4, "failed", False),
    ]
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'pgqueue' AND table_name = 'job_status' ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns] == [
        "id", "queue", "kind", "state", "attempts", "max_attempts", "progress", "last_error",
        "run_at", "created_at", "started_at", "finished_at", "is_live",
        # version 8: the result, what the job was charged, and whether a budget parks it
        "result", "spent", "over_budget",
        # version 13: the payload, by which an application finds its own jobs
        "payload",
    ]  # fmt: skip
    comment = await conn.fetchval("SELECT obj_description('pgqueue.job_status'::regclass)")
    assert comment is not None and "not pgqueue.jobs" in comment
