"""Handlers for worker processes started by the acceptance tests.

Side tables (created by the tests) record what handlers did, so that tests can count effects
across processes: `effects(job_id)` is written in the same transaction that completes the job.
"""

from __future__ import annotations

import asyncio

from pgqueue import JobContext, Registry

registry = Registry()

SIDE_TABLES = """
CREATE TABLE effects (job_id bigint NOT NULL, worker_id text NOT NULL);
CREATE TABLE key_load (job_id bigint PRIMARY KEY, key text NOT NULL);
CREATE TABLE key_peaks (key text NOT NULL, seen integer NOT NULL);
"""


@registry.handler("noop")
async def noop(ctx: JobContext) -> None:
    """Does nothing."""


@registry.handler("sleep")
async def sleep(ctx: JobContext) -> str:
    """Sleeps `payload["s"]` seconds, reporting progress."""
    await ctx.progress(0, "sleeping")
    await asyncio.sleep(float(ctx.payload["s"]))
    return "slept"


@registry.handler("effect")
async def effect(ctx: JobContext) -> None:
    """Optionally sleeps, then records its effect and completes the job in one transaction."""
    seconds = float((ctx.payload or {}).get("s", 0))
    key = ctx.job.concurrency_key
    if key is not None:
        # How many jobs of this key run right now, this one included: must never pass the cap.
        async with ctx.transaction() as conn:
            await conn.execute("INSERT INTO key_load VALUES ($1, $2)", ctx.job.id, key)
        seen = await _count_load(ctx, key)
        async with ctx.transaction() as conn:
            await conn.execute("INSERT INTO key_peaks VALUES ($1, $2)", key, seen)
    if seconds:
        await asyncio.sleep(seconds)
    async with ctx.transaction() as conn:
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", ctx.job.id, ctx.job.worker_id)
        if key is not None:
            await conn.execute("DELETE FROM key_load WHERE job_id = $1", ctx.job.id)
        await ctx.complete_in(conn)


async def _count_load(ctx: JobContext, key: str) -> int:
    async with ctx.transaction() as conn:
        seen: int = await conn.fetchval("SELECT count(*) FROM key_load WHERE key = $1", key)
    return seen
