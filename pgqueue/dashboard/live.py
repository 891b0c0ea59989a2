"""What the dashboard's pages poll every 2 s (`GET live`): the queues' counts, the states of
the jobs a page lists, the workers, and the server's clock (the page's relative times count
from it, not from the browser's clock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pgqueue import store
from pgqueue.dashboard import timefmt
from pgqueue.queue import Queue


async def live_answer(queue: Queue, db: store.Executor, job_ids: Sequence[int]) -> dict[str, Any]:
    """The JSON answer of one poll, for the jobs `job_ids` (those that exist)."""

    states = await store.job_states(db, job_ids) if job_ids else {}
    answer = {
        "now": datetime.now(UTC).isoformat(),
        "queues": [
            {
                "queue": info.queue,
                "paused": info.paused,
                "waiting": info.stats.waiting,
                "delayed": info.stats.delayed,
                "active": info.stats.active,
                "completed": info.stats.completed,
                "failed": info.stats.failed,
                "cancelled": info.stats.cancelled,
                "oldest": timefmt.duration(info.oldest_waiting_s),
            }
            for info in await queue.queues()
        ],
        "jobs": {
            str(job_id): {
                "state": state["state"],
                "attempts": f"{state['attempts']}/{state['max_attempts']}",
                "cancelling": state["cancelling"],
                "finished_at": iso(state["finished_at"]),
                "finished_title": timefmt.when(state["finished_at"]),
            }
            for job_id, state in states.items()
        },
        "workers": [
            {
                "id": w.id,
                "running": w.running,
                "concurrency": w.concurrency,
                "heartbeat_at": w.heartbeat_at.isoformat(),
                "stale": w.stale,
            }
            for w in await queue.workers()
        ],
    }
    return answer


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the offset, what `Date.parse` reads (None stays None)."""
    return None if moment is None else moment.isoformat()
