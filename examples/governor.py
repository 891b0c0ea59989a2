"""Spend a paid, flaky upstream well: fair turns, a budget, a breaker (the guide's example).

DATABASE_URL=postgresql://... python examples/governor.py   # on a migrated database
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from pgqueue import (
    JobContext,
    JobSpec,
    Queue,
    Registry,
    RetryPolicy,
    UpstreamDown,
    Worker,
    WorkerConfig,
)

registry = Registry()
calls: list[str] = []
outage_ends: list[float] = []  # the upstream answers 503 for a second from the first call


@registry.handler("image.generate")
async def generate(ctx: JobContext) -> None:
    calls.append(ctx.payload["user"])
    if not outage_ends:
        outage_ends.append(time.monotonic() + 1.0)
    if time.monotonic() < outage_ends[0]:
        await ctx.charge(0)  # an error answer costs nothing
        raise UpstreamDown("503 Service Unavailable")
    await asyncio.sleep(0.05)  # the paid call; the whole cost is charged


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    async with asyncpg.create_pool(dsn) as pool:
        queue = Queue(pool)
        await queue.set_breaker("seedream", threshold=2, window_s=30, open_s=0.5)
        await queue.set_budget("user:bob", 2)  # credits per UTC day
        specs = [
            JobSpec(
                "image.generate",
                {"user": user},
                rate_limit_key="seedream",  # the breaker's key
                fairness_key=f"user:{user}",  # users take turns
                cost=1,
                budget_keys=[f"user:{user}"],
            )
            for user, shots in (("ann", 6), ("bob", 3))
            for _ in range(shots)
        ]
        await queue.enqueue_many(specs)
        config = WorkerConfig(concurrency=1, retry_policy=RetryPolicy(base_s=0.5))
        worker = Worker(dsn, registry, config)
        task = asyncio.create_task(worker.run())
        while len(await queue.list_jobs(state="succeeded")) < 8:
            await asyncio.sleep(0.1)
        worker.stop()
        await task
        (bob,) = await queue.budgets(["user:bob"])
        waiting = await queue.list_jobs(state="queued")
        print(f"calls into the outage: {len(calls) - 8}")
        print(f"then: {' '.join(calls[-8:])}")
        print(f"bob spent {bob['spent']} of {bob['amount']}; {len(waiting)} shot waits for more")


if __name__ == "__main__":
    asyncio.run(main())
