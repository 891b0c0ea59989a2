"""DBOS Transact's side of the comparison; runs in the peers' venv (dbos + stdlib only).

DBOS queues are tables of its system database (here: the fresh database the bench hands out,
schema `dbos`), polled by one thread per queue every `polling_interval_sec` (default 1 s); its
queue docs give that interval as the knob between latency and database load, so the SETTING
argument is that interval in milliseconds, swept down to 10 ms. Workflows are `async`, run on
DBOS's own event loop; the queue has no concurrency limit (DBOS then dequeues every enqueued
workflow at each poll). DBOS has no batch enqueue: the client enqueues one workflow per call
(`DBOSClient.enqueue_async`), BATCH calls at once. See runner_common.py for the commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import uvloop
from dbos import DBOS, DBOSClient, DBOSConfig
from runner_common import PROBE, EnqueueOne, Peer, main

APP = "pgqueue-bench"
QUEUE = "bench"
NOOP = "noop"
LATENCY = "latency"
DRAIN_CHECK_S = 0.05
# -- unfinished: workflows still waiting or running (the drain ends at 0)
UNFINISHED = "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('ENQUEUED', 'PENDING')"

_stamps: Any = None  # the worker's stamps file, when timing latency
_lock = threading.Lock()


def _stamp(seq: int) -> None:
    started = time.time()
    if _stamps is not None:
        with _lock:
            _stamps.write(f"{seq} {started}\n")


@DBOS.workflow(name=NOOP)
async def noop() -> None:
    """A no-op; a probe of the latency run (stamped -1)."""
    _stamp(PROBE)


@DBOS.workflow(name=LATENCY)
async def latency(seq: int) -> None:
    """Stamps its start."""
    _stamp(seq)


def _config(dsn: str) -> DBOSConfig:
    return {"name": APP, "system_database_url": dsn, "log_level": "WARNING"}


async def install(dsn: str) -> None:
    """Create DBOS's system tables (a launch migrates them), then stop."""
    DBOS(config=_config(dsn))
    DBOS.launch()
    DBOS.destroy()


async def enqueue(dsn: str, jobs: int, batch: int) -> float:
    """Enqueue `jobs` no-ops, one per call, `batch` calls in flight at once; jobs/s."""
    client = DBOSClient(system_database_url=dsn, application_name=APP)
    try:
        options: Any = {"queue_name": QUEUE, "workflow_name": NOOP, "application_name": APP}
        started = time.perf_counter()
        for start in range(0, jobs, batch):
            count = min(batch, jobs - start)
            await asyncio.gather(*(client.enqueue_async(options) for _ in range(count)))
        return jobs / (time.perf_counter() - started)
    finally:
        client.destroy()


async def worker(dsn: str, polling_ms: int, drain: bool, stamps_path: str | None) -> None:
    """One DBOS process serving the queue, until drained (or signalled)."""
    global _stamps
    _stamps = open(stamps_path, "a", buffering=1) if stamps_path else None  # noqa: SIM115
    DBOS(config=_config(dsn))
    DBOS.launch()
    await DBOS.register_queue_async(QUEUE, polling_interval_sec=polling_ms / 1000)
    try:
        if not drain:
            await asyncio.Event().wait()  # until the bench stops the process
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                row = conn.execute(UNFINISHED).fetchone()
                if row is not None and row[0] == 0:
                    break
                await asyncio.sleep(DRAIN_CHECK_S)
    finally:
        DBOS.destroy()
        if _stamps is not None:
            _stamps.close()


@contextlib.asynccontextmanager
async def client(dsn: str) -> AsyncIterator[EnqueueOne]:
    """One workflow per enqueue call."""
    dbos_client = DBOSClient(system_database_url=dsn, application_name=APP)

    async def enqueue_one(seq: int) -> None:
        options: Any = {"queue_name": QUEUE, "application_name": APP}
        if seq == PROBE:
            await dbos_client.enqueue_async({**options, "workflow_name": NOOP})
        else:
            await dbos_client.enqueue_async({**options, "workflow_name": LATENCY}, seq)

    try:
        yield enqueue_one
    finally:
        dbos_client.destroy()


if __name__ == "__main__":
    main(Peer(install=install, enqueue=enqueue, worker=worker, client=client, run=uvloop.run))
