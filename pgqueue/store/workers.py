"""The workers' presence (schema v12): each worker's beat, its clean exit, and the listing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pgqueue import queries, reports
from pgqueue.store._common import Executor

STALE_KEPT_S = 3600.0  # seconds a stale worker's row is still shown before a worker prunes it


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a worker says of itself at each beat.

    Args:
        worker_id: its id (`jobs.worker_id` of the jobs it runs).
        host: its host name.
        pid: its process id.
        queues: the queues it claims from.
        concurrency: its slots.
        running: slots in use now.
        expires_in_s: seconds after which, without another beat, it counts as gone.
    """

    worker_id: str
    host: str
    pid: int
    queues: Sequence[str]
    concurrency: int
    running: int
    expires_in_s: float


async def beat_worker(db: Executor, beat: WorkerBeat) -> None:
    """Record that the worker is alive (its row is created at the first beat)."""
    await db.execute(
        queries.BEAT_WORKER,
        beat.worker_id,
        beat.host,
        beat.pid,
        list(beat.queues),
        beat.concurrency,
        beat.running,
        beat.expires_in_s,
    )


async def remove_worker(db: Executor, worker_id: str) -> None:
    """Forget a worker that exits cleanly."""
    await db.execute(queries.REMOVE_WORKER, worker_id)


async def prune_workers(db: Executor, older_than_s: float = STALE_KEPT_S) -> int:
    """Delete the rows of workers stale for more than `older_than_s`; returns how many."""
    status = await db.execute(queries.PRUNE_WORKERS, older_than_s)
    return int(status.split()[-1])


async def list_workers(db: Executor) -> list[reports.WorkerInfo]:
    """Every known worker, live ones first (newest beat first), then stale ones."""
    return [reports.WorkerInfo.from_record(r) for r in await db.fetch(queries.LIST_WORKERS)]
