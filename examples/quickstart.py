"""Enqueue a job and run it with a worker, in one script (needs a migrated DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from pgqueue import JobContext, Queue, Registry, Worker, WorkerConfig

registry = Registry()


@registry.handler("greet")
async def greet(ctx: JobContext) -> str:
    await ctx.progress(50, "halfway there")
    return f"hello, {ctx.payload['name']}"


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    async with asyncpg.create_pool(dsn) as pool:
        queue = Queue(pool)
        job = await queue.enqueue("greet", {"name": "Ada"}, max_attempts=3)
        await Worker(dsn, registry, WorkerConfig(burst=True)).run()  # burst: drain, then exit
        done = await queue.get(job.id)
        assert done is not None
        print(done.state, done.result, done.progress)


if __name__ == "__main__":
    asyncio.run(main())
