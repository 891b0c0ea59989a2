"""A handler's transaction left idle (its worker cut off, or stuck) is ended by the server.

While `ctx.transaction()` is open the job's row is locked, and every reaper skips it. A worker
cut off from the database mid-transaction leaves its session "idle in transaction" holding
that lock until TCP notices (hours, by default), and the job would sit `running` with an
expired lease all that while. pgqueue bounds the idle time of such a transaction
(`transaction_idle_limit_s`); tests/chaos/test_multihost.py cuts a real link, this test holds
the transaction idle.
"""

from __future__ import annotations

import asyncio

import asyncpg

from pgqueue import JobContext, Queue, Registry
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

LEASE_S = 0.5
IDLE_LIMIT_S = 1.0  # (the default is two leases, at least 30 s)

# Idle in transaction for a while: the worker's own short transactions (the reaper's, every
# eighth of a second here) are idle in transaction for a moment between their statements too.
IDLE_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'idle in transaction'
  AND state_change < now() - interval '200 milliseconds'
"""


async def test_an_idle_handler_transaction_is_ended_at_the_limit(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    entered = asyncio.Event()
    errors: list[BaseException] = []

    @registry.handler("idle")
    async def idle(ctx: JobContext) -> None:
        try:
            async with ctx.transaction():
                entered.set()
                await asyncio.sleep(30)  # a stuck handler, holding its transaction open
        except Exception as exc:
            errors.append(exc)
            raise

    job = await queue.enqueue("idle", max_attempts=1)
    async with running_worker(
        registry, lease_s=LEASE_S, shutdown_grace_s=0, transaction_idle_limit_s=IDLE_LIMIT_S
    ):
        await asyncio.wait_for(entered.wait(), 10)

        async def held_idle() -> bool:
            return bool(await pool.fetchval(IDLE_SESSIONS) == 1)  # the handler's, holding the row

        await wait_for(held_idle, timeout=5, message="the handler's idle transaction")

        async def ended() -> bool:
            return bool(await pool.fetchval(IDLE_SESSIONS) == 0)

        # The limit (1 s) and the server's own check: well within 5 s.
        await wait_for(ended, timeout=5, message="the server ended the idle transaction")

        # The job's row is no longer locked, so a reaper may take it once its lease runs out.
        # Whether one has by now depends on the heartbeat (the handler still runs, so its
        # worker may renew the lease first) and on timing: either is fine. The heartbeat and
        # the reaper lock the row for a moment too, hence a wait rather than one look.
        async def unlocked() -> bool:
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT state FROM pgqueue.jobs WHERE id = $1 FOR UPDATE SKIP LOCKED", job.id
                )
            return row is not None

        await wait_for(unlocked, timeout=5, message="the job's row unlocked")
