"""The crash test: acknowledged enqueues, a kill -9 right after the last, a restart, a count.

Ours: a PRIVATE embedded Postgres (fsync on, synchronous_commit on: the server's defaults, not
the bench's fast settings) in a temporary directory; `crash_jobs` jobs enqueued with
`Queue.enqueue`, one per call, from `crash_callers` concurrent callers on a pool; the moment the
last call returns, SIGKILL to the postmaster; once its processes are gone, the server starts
again (crash recovery) and the acknowledged ids are counted: lost = acknowledged - present.

Beside it, BullMQ's: the same number of `add` calls, as many at once, to a private Redis with
AOF on and `appendfsync everysec` (what BullMQ's docs advise), SIGKILL to redis-server from the
adding process the moment the last add resolves, a restart on the same directory, and the
jobs in its wait list counted.

A process crash leaves the kernel's page cache in place: what a server has written survives
it, fsync or not; what it had not yet written is lost. (A power cut, where fsync matters, is
not simulated.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from bench import handlers
from bench.context import Context
from bench.peers import catalog, node_env, redis
from bench.scenarios import peers
from devserver.embedded import EmbeddedPostgres
from pgqueue import Queue
from tests.support import db
from tests.support.wait import wait_for

GONE_TIMEOUT_S = 30.0  # seconds the killed server's processes may take to exit
BULLMQ_WAIT_LIST = "bull:bench:wait"  # where BullMQ's runner's added jobs wait (no worker runs)

# -- present: how many of the acknowledged ids the restarted server has
PRESENT = "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY($1::bigint[])"


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the postmaster's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    # Gone means reaped too: `pg_ctl status` takes a zombie postmaster for a running one.
    return not Path(f"/proc/{pid}").exists()


async def _enqueue_acknowledged(url: str, jobs: int, callers: int) -> list[int]:
    """Enqueue `jobs` jobs one per call from `callers` callers; the ids acknowledged."""
    pool = await asyncpg.create_pool(url, min_size=callers, max_size=callers)
    acknowledged: list[int] = []
    queue = Queue(pool)
    remaining = iter(range(jobs))

    async def caller() -> None:
        for seq in remaining:
            job = await queue.enqueue(handlers.NOOP, {"seq": seq})
            acknowledged.append(job.id)

    try:
        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        pool.terminate()  # the server is about to die: no orderly goodbye
    return acknowledged


async def postgres(ctx: Context) -> dict[str, Any]:
    """Ours: the figures `crash_pg_*`."""
    config = ctx.config
    workdir = Path(tempfile.mkdtemp(prefix="pgqueue-bench-crash-", dir="/tmp"))
    server = EmbeddedPostgres(workdir / "pgdata", fast=False)  # fsync on
    try:
        admin_url = await asyncio.to_thread(server.start)
        await db.create_database(admin_url, "crash")
        url = server.url_for("crash")
        await asyncio.to_thread(db.migrate, url)
        fsync = await _setting(url, "fsync")
        acknowledged = await _enqueue_acknowledged(url, config.crash_jobs, config.crash_callers)
        # The moment the last enqueue returned: kill -9 the postmaster.
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        children = _children(postmaster)
        os.kill(postmaster, signal.SIGKILL)
        await wait_for(
            lambda: all(_gone(pid) for pid in [postmaster, *children]),
            GONE_TIMEOUT_S,
            "the killed server's processes to exit",
        )
        await asyncio.to_thread(server.start)  # crash recovery replays the WAL
        conn = await asyncpg.connect(url)
        try:
            present = int(await conn.fetchval(PRESENT, acknowledged))
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "crash_pg_acknowledged": len(acknowledged),
        "crash_pg_lost": len(acknowledged) - present,
        "crash_pg_fsync": fsync,
    }
    ctx.say(
        f"crash: pgqueue, private Postgres (fsync {fsync}): {len(acknowledged)} acknowledged, "
        f"{result['crash_pg_lost']} lost after kill -9 of the postmaster and a restart"
    )
    return result


async def _setting(url: str, name: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        value: str = await conn.fetchval("SELECT current_setting($1)", name)
    finally:
        await conn.close()
    return value


async def bullmq(ctx: Context) -> dict[str, Any]:
    """BullMQ's: the figures `crash_bullmq_*`."""
    config = ctx.config
    spec = catalog.PEERS["bullmq"]
    versions = await asyncio.to_thread(node_env.ensure)
    if "bullmq" not in versions or redis.binary() is None:
        return {"crash_bullmq_error": "BullMQ or redis-server could not be installed"}
    async with redis.running(ctx.processes) as server:
        assert server.process is not None
        out = await peers.runner(
            spec,
            "crash",
            server.url,
            str(config.crash_jobs),
            str(config.crash_callers),
            str(server.process.pid),
        )
        acknowledged = int(json.loads(out.strip().splitlines()[-1])["acknowledged"])
        server.process.wait(10)
        await server.start()  # replays the AOF
        present = redis.command(server.port, "LLEN", BULLMQ_WAIT_LIST)
    assert isinstance(present, int)
    result = {
        "crash_bullmq_acknowledged": acknowledged,
        "crash_bullmq_lost": acknowledged - present,
        "crash_bullmq_version": versions["bullmq"],
    }
    ctx.say(
        f"crash: BullMQ {versions['bullmq']}, Redis with AOF everysec: {acknowledged} "
        f"acknowledged, {result['crash_bullmq_lost']} lost after kill -9 of redis-server"
    )
    return result


async def run(ctx: Context) -> dict[str, Any]:
    """Ours, then BullMQ's (which fails alone if it cannot run)."""
    result = await postgres(ctx)
    try:
        result.update(await bullmq(ctx))
    except Exception as exc:  # ours stands without BullMQ's
        result["crash_bullmq_error"] = f"{type(exc).__name__}: {exc}"
        ctx.say(f"crash: BullMQ FAILED: {result['crash_bullmq_error']}")
    return result
