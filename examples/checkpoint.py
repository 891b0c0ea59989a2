"""A paid step run once per job although its first attempt fails after it: `ctx.checkpoint`
(needs a migrated DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from pgqueue import JobContext, Queue, Registry, RetryPolicy, Worker, WorkerConfig

registry = Registry()
paid = 0


async def call_upstream() -> dict[str, str]:
    global paid
    paid += 1  # say: a paid image API
    return {"url": "https://cdn.example/frame-1.png"}


@registry.handler("frame.render")
async def render(ctx: JobContext) -> str:
    answer = await ctx.checkpoint("answer", call_upstream)  # stored once, read by later attempts
    if ctx.attempt == 1:
        raise OSError("disk full")  # anything failing after the answer: the attempt is retried
    return answer["url"]


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    async with asyncpg.create_pool(dsn) as pool:
        queue = Queue(pool)
        job = await queue.enqueue("frame.render", max_attempts=3)
        retry_soon = RetryPolicy(base_s=0.1, cap_s=0.1, jitter=0)
        worker = Worker(dsn, registry, WorkerConfig(retry_policy=retry_soon))
        task = asyncio.create_task(worker.run())
        while (done := await queue.get(job.id)) is not None and not done.state.is_terminal:
            await asyncio.sleep(0.1)
        worker.stop()
        await task
        assert done is not None
        print(f"{done.state.value} after {done.attempts} attempts, paid {paid}: {done.result}")


if __name__ == "__main__":
    asyncio.run(main())
