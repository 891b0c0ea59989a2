"""The handlers of the multi-host test (tests/chaos/test_multihost.py), for
`python -m pgqueue.worker tests.support.fleet_handlers:registry`.

One kind, `fleet.work`: it records its start, works (sleeps `work_s`), then records its end
and its one effect and completes the job, all in one `ctx.transaction()`, so that the effect
and the success commit together, and only while the lease holds. Both records carry the run's
lease token, attempt, worker and host, so the database shows which run did what.

What the database cannot see, a cut-off host's handler, goes to a trace of JSON lines
(`FLEET_TRACE`), one file per worker on the file system the hosts share: when the handler
started and stopped working, whether the worker cancelled it, and what became of its final
write. That write is stubborn on purpose: it runs in a task of its own that outlives the
handler's cancellation and retries through connection errors until the network answers, as a
write already on its way when the link failed would. Fencing must refuse it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import asyncpg

from pgqueue import JobContext, LeaseLost, Registry

KIND = "fleet.work"
HOST = os.environ.get("FLEET_HOST", "?")
TRACE = os.environ.get("FLEET_TRACE")
ATTEMPT_TIMEOUT_S = 2.0  # one try of the final write, on a link that may be dead
RETRY_S = 0.1  # between two tries
GIVE_UP_S = 60.0  # a final write still failing after this is abandoned (the test is over)
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
)

# The tables the handlers write, and the test's view of every lease's end. A trigger, not a
# handler, records when a lease ended (its job left `running`: completed, or reaped): only
# the database knows when a cut-off run stopped counting, and the trigger fires inside the
# very statement that frees the job's concurrency slot.
SCHEMA = """
CREATE TABLE fleet_runs (
    job_id bigint NOT NULL,
    lease_token bigint NOT NULL,
    attempt int NOT NULL,
    worker_id text NOT NULL,
    host text NOT NULL,
    concurrency_key text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    PRIMARY KEY (job_id, lease_token)
);
-- No unique key on job_id: a second effect of one job would show, not fail.
CREATE TABLE fleet_effects (
    job_id bigint NOT NULL,
    lease_token bigint NOT NULL,
    attempt int NOT NULL,
    worker_id text NOT NULL,
    host text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE fleet_lease_ends (
    job_id bigint NOT NULL,
    lease_token bigint NOT NULL,
    worker_id text,
    new_state text NOT NULL,
    last_error text,
    ended_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, lease_token)
);
CREATE FUNCTION fleet_note_lease_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_lease_ends (job_id, lease_token, worker_id, new_state, last_error)
    VALUES (OLD.id, OLD.lease_token, OLD.worker_id, NEW.state::text, NEW.last_error);
    RETURN NULL;
END $$;
CREATE TRIGGER fleet_lease_end AFTER UPDATE ON pgqueue.jobs
    FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state <> 'running')
    EXECUTE FUNCTION fleet_note_lease_end();
"""

registry = Registry()
_finishing: set[asyncio.Task[Any]] = set()  # final writes that outlived their handler


def trace(event: str, ctx: JobContext, **extra: Any) -> None:
    """Append one line to this worker's trace (no-op without FLEET_TRACE)."""
    if TRACE is None:
        return
    line = {
        "t": time.time(),
        "event": event,
        "host": HOST,
        "job_id": ctx.job.id,
        "attempt": ctx.attempt,
        "lease_token": ctx.job.lease_token,
        "key": ctx.job.concurrency_key,
        **extra,
    }
    # One short write in append mode: lines of concurrent handlers never interleave.
    with open(TRACE, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


@registry.handler(KIND)
async def work(ctx: JobContext) -> Any:
    """Record the start, work, then record the end and the effect with the job's success."""
    async with ctx.transaction() as conn:
        await conn.execute(
            "INSERT INTO fleet_runs (job_id, lease_token, attempt, worker_id, host,"
            " concurrency_key) VALUES ($1, $2, $3, $4, $5, $6)",
            ctx.job.id,
            ctx.job.lease_token,
            ctx.attempt,
            ctx.job.worker_id,
            HOST,
            ctx.job.concurrency_key,
        )
    trace("started", ctx)
    try:
        await asyncio.sleep(float(ctx.payload["work_s"]))
    except asyncio.CancelledError:
        trace("cancelled", ctx, phase="working")
        raise
    trace("worked", ctx)
    finish = asyncio.create_task(_finish(ctx))
    _finishing.add(finish)
    finish.add_done_callback(_forget)
    try:
        return await asyncio.shield(finish)
    except asyncio.CancelledError:
        # The worker gave the job up (its lease ran out); the write goes on regardless.
        trace("cancelled", ctx, phase="finishing")
        raise


async def _finish(ctx: JobContext) -> dict[str, Any]:
    give_up = time.monotonic() + GIVE_UP_S
    while True:
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S), ctx.transaction() as conn:
                await conn.execute(
                    "UPDATE fleet_runs SET ended_at = clock_timestamp()"
                    " WHERE job_id = $1 AND lease_token = $2",
                    ctx.job.id,
                    ctx.job.lease_token,
                )
                await conn.execute(
                    "INSERT INTO fleet_effects (job_id, lease_token, attempt, worker_id, host)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    ctx.job.id,
                    ctx.job.lease_token,
                    ctx.attempt,
                    ctx.job.worker_id,
                    HOST,
                )
                result = {"host": HOST, "attempt": ctx.attempt}
                await ctx.complete_in(conn, result)
        except LeaseLost:
            trace("fenced", ctx)
            raise
        except CONNECTION_ERRORS as exc:
            trace("write_failed", ctx, error=f"{type(exc).__name__}: {exc}")
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(RETRY_S)
            continue
        trace("committed", ctx)
        return result


def _forget(task: asyncio.Task[Any]) -> None:
    _finishing.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a refused write after the handler ended is expected
