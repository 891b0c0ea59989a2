"""Workers from the command line: `workers`, the ones alive now (and stale ones, marked)."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgqueue import reports, store
from pgqueue.cli.common import Exit, json_line, table


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `workers`."""
    workers = commands.add_parser(
        "workers", help="the workers alive now: queues, slots in use, last heartbeat"
    )
    workers.add_argument("--json", action="store_true", help="one JSON object per line")
    workers.set_defaults(handler=list_workers)


async def list_workers(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`workers`: live ones first; a worker that stopped beating without exiting is `stale`
    (shown for an hour, then pruned by the live workers)."""
    workers = await store.list_workers(conn)
    if args.json:
        for worker in workers:
            print(json_line(worker_fields(worker)))
        return Exit.OK
    rows = [
        (
            w.id,
            w.host,
            w.pid,
            ",".join(w.queues),
            f"{w.running}/{w.concurrency}",
            w.heartbeat_at,
            "stale" if w.stale else "alive",
        )
        for w in workers
    ]
    headers = ("ID", "HOST", "PID", "QUEUES", "SLOTS", "HEARTBEAT", "STATUS")
    print(table(rows, headers) if rows else "no workers")
    return Exit.OK


def worker_fields(worker: reports.WorkerInfo) -> dict[str, Any]:
    """A worker as `--json` prints it."""
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": worker.queues,
        "concurrency": worker.concurrency,
        "slots_in_use": worker.running,
        "last_heartbeat": worker.heartbeat_at,
        "started_at": worker.started_at,
        "expires_at": worker.expires_at,
        "alive": not worker.stale,
        "stale": worker.stale,
    }
