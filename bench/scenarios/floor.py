"""The pickup floor: how fast can anything built on Postgres pick a job up?

A plain table, a producer that inserts one row and NOTIFYs in one statement, and a listener
process (`bench/floor_listener.py`: one asyncpg connection, LISTEN, one claim statement per
job, nothing else) that stamps the moment each claim returns. The paced workload is our latency
scenario's (`latency_jobs` jobs `latency_interval_ms` apart, probes first), and our own pickup
is measured in the same run, in rounds alternating with the floor's; the figure to watch is
ours / floor at p50 (target <= 1.2).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.context import Context
from bench.floor_listener import CHANNEL
from bench.scenarios import latency as our_latency
from bench.stats import percentile
from tests.support.processes import Process
from tests.support.wait import wait_for

READY_TIMEOUT_S = 20.0
PROBES = 2  # jobs picked up before the timed ones: the listener is idle and listening

# -- create_table: the floor's queue, a plain table
CREATE_TABLE = """
CREATE TABLE bench_floor_job (id bigserial PRIMARY KEY, claimed_at timestamptz)
"""

# -- enqueue: one row and its notification, committed together (one round trip)
ENQUEUE = f"""
WITH job AS (INSERT INTO bench_floor_job DEFAULT VALUES RETURNING id)
SELECT id, pg_notify('{CHANNEL}', '') FROM job
"""


def _stamps(path: Path) -> dict[int, float]:
    stamps: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            job_id, _, t = line.partition(" ")
            if t:
                stamps[int(job_id)] = float(t)
    return stamps


async def measure_floor(ctx: Context, label: str) -> list[float]:
    """One floor run: the latencies in ms."""
    config = ctx.config
    stamps = ctx.processes.log_dir / f"{label}.stamps"
    stamps.unlink(missing_ok=True)
    async with ctx.databases.fresh(label.replace("-", "_"), migrated=False) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(CREATE_TABLE)
            listener: Process = ctx.processes.python(
                label, "-m", "bench.floor_listener", dsn, str(stamps)
            )
            with listener:

                def ready() -> bool:
                    listener.check_alive()
                    return "ready" in listener.output()

                await wait_for(ready, READY_TIMEOUT_S, "the floor's listener to listen")
                enqueue = await conn.prepare(ENQUEUE)
                for expected in range(1, PROBES + 1):
                    await enqueue.fetchrow()
                    await wait_for(
                        lambda expected=expected: len(_stamps(stamps)) >= expected,
                        READY_TIMEOUT_S,
                        "the floor's listener to claim a probe",
                    )
                sent: dict[int, float] = {}
                interval_s = config.latency_interval_ms / 1000
                next_at = time.monotonic()
                for _ in range(config.latency_jobs):
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing
                    next_at += interval_s
                    before = time.time()
                    row = await enqueue.fetchrow()
                    sent[row["id"]] = before

                def all_claimed() -> dict[int, float] | None:
                    listener.check_alive()
                    found = _stamps(stamps)
                    return found if found.keys() >= sent.keys() else None

                claimed = await wait_for(all_claimed, 30, "the floor's jobs to be claimed")
        finally:
            await conn.close()
    return [(claimed[job_id] - t) * 1000 for job_id, t in sent.items()]


async def run(ctx: Context) -> dict[str, Any]:
    """Alternate floor and ours `floor_rounds` times; pooled percentiles and the ratio."""
    floor: list[float] = []
    ours: list[float] = []
    for number in range(ctx.config.floor_rounds):
        floor += await measure_floor(ctx, f"floor-{number}")
        ours += await our_latency.measure(ctx, f"floor-ours-{number}")
    result = {
        "floor_p50_ms": round(percentile(floor, 0.50), 2),
        "floor_p95_ms": round(percentile(floor, 0.95), 2),
        "floor_p99_ms": round(percentile(floor, 0.99), 2),
        "floor_ours_p50_ms": round(percentile(ours, 0.50), 2),
        "floor_ours_p99_ms": round(percentile(ours, 0.99), 2),
        "floor_jobs": len(floor),
    }
    result["floor_ratio_p50"] = round(result["floor_ours_p50_ms"] / result["floor_p50_ms"], 2)
    result["floor_ratio_p99"] = round(result["floor_ours_p99_ms"] / result["floor_p99_ms"], 2)
    ctx.say(
        "floor: notify-and-claim p50 {floor_p50_ms} ms, p99 {floor_p99_ms} ms; ours p50 "
        "{floor_ours_p50_ms} ms, p99 {floor_ours_p99_ms} ms: ours / floor {floor_ratio_p50} "
        "(p50), {floor_ratio_p99} (p99)".format(**result)
    )
    return result
