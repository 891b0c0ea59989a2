"""Six jobs under a rate limit of two starts a second, and a 429 that pauses their key for two
seconds (needs a migrated DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from pgqueue import JobContext, JobSpec, Queue, Registry, RetryLater, Worker, WorkerConfig

registry = Registry()
began = time.monotonic()
calls = 0


@registry.handler("image.generate")
async def generate(ctx: JobContext) -> None:
    global calls
    calls += 1
    if calls == 3:  # say the upstream answered 429 with Retry-After: 2
        raise RetryLater("upstream 429", throttle_s=2)  # the key waits 2 s; no attempt spent
    print(f"{time.monotonic() - began:4.1f}s shot {ctx.payload['shot']}")


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    async with asyncpg.create_pool(dsn) as pool:
        queue = Queue(pool)
        await queue.set_rate_limit("seedream", 2, 1.0)  # at most 2 starts in any second
        jobs = await queue.enqueue_many(
            [JobSpec("image.generate", {"shot": n}, rate_limit_key="seedream") for n in range(6)]
        )
        # Not a burst run: that ends as soon as nothing is runnable *now*, and held-back jobs
        # become runnable only as their key allows.
        worker = Worker(dsn, registry, WorkerConfig(concurrency=6))
        task = asyncio.create_task(worker.run())
        while [job for job in await queue.list_jobs(state="queued")]:
            await asyncio.sleep(0.1)
        worker.stop()
        await task
        done = [await queue.get(job.id) for job in jobs]
        print(sorted({(job.state.value, job.attempts) for job in done if job is not None}))


if __name__ == "__main__":
    asyncio.run(main())
