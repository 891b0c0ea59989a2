"""The floor's listener: `python -m bench.floor_listener DSN STAMPS`.

The least a Postgres queue can do to pick a job up: one asyncpg connection LISTENing, and on
each notification one claim statement (repeated while it finds a row). It appends
`<id> <time.time()>` to STAMPS the moment a claim returns its row, which is where our handler's
first line reads its clock. Runs until SIGTERM. Prints `ready` once it listens.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import asyncpg

CHANNEL = "bench_floor"

# -- claim: the oldest unclaimed row, skipping rows another claimer holds
CLAIM = """
UPDATE bench_floor_job SET claimed_at = now()
WHERE id = (
    SELECT id FROM bench_floor_job WHERE claimed_at IS NULL
    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
)
RETURNING id
"""


async def main(dsn: str, stamps_path: str) -> None:
    """Listen, claim on every notification, stamp every claim, until SIGTERM."""
    conn = await asyncpg.connect(dsn)
    wake = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await conn.add_listener(CHANNEL, lambda *_: wake.set())
    print("ready", flush=True)
    with open(stamps_path, "a", buffering=1) as stamps:
        while not stop.is_set():
            waiter = asyncio.ensure_future(wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            wake.clear()
            # Claim until empty: notifications that arrived meanwhile are covered by this loop.
            while (job_id := await conn.fetchval(CLAIM)) is not None:
                stamps.write(f"{job_id} {time.time()}\n")
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
