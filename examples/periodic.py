"""A job every second, run by three workers at once: each tick runs once, on one of them
(needs a migrated DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from pgqueue import JobContext, Queue, Registry, Worker, WorkerConfig

registry = Registry()
registry.periodic(1, "heartbeat.report")  # or a cron expression: "*/5 * * * *" (UTC)
ran: list[str] = []


@registry.handler("heartbeat.report")
async def report(ctx: JobContext) -> None:
    tick = (ctx.job.idempotency_key or "").rsplit(":", 3)[-3:]  # the tick it was made for
    ran.append(":".join(tick))


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    workers = [Worker(dsn, registry, WorkerConfig(concurrency=2)) for _ in range(3)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    while len(ran) < 3:  # a new schedule starts with its next tick
        await asyncio.sleep(0.1)
    for worker in workers:
        worker.stop()
    await asyncio.gather(*tasks)
    async with asyncpg.create_pool(dsn) as pool:
        (schedule,) = await Queue(pool).schedules()
        print(f"{schedule['name']}: {schedule['schedule']}, ticks run: {len(ran)}")
        print("one job per tick:", len(ran) == len(set(ran)))


if __name__ == "__main__":
    asyncio.run(main())
