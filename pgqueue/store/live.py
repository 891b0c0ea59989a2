"""What the dashboard reads again and again (see `queries.live`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgqueue import queries, reports
from pgqueue.store._common import Executor

DURATION_WINDOW_S = 3600.0  # the recent jobs whose durations are summed up: the last hour's
DURATION_MAX_JOBS = 20_000  # of at most this many, the latest finished


async def job_states(db: Executor, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per existing job of `job_ids`: `state`, `attempts`, `max_attempts`, `cancelling` (its
    cancel asked, not yet seen by its worker) and `finished_at`."""
    records = await db.fetch(queries.JOB_STATES, list(job_ids))
    return {
        r["id"]: {
            "state": r["state"],
            "attempts": r["attempts"],
            "max_attempts": r["max_attempts"],
            "cancelling": r["cancelling"],
            "finished_at": r["finished_at"],
        }
        for r in records
    }


async def kind_durations(
    db: Executor,
    *,
    window_s: float = DURATION_WINDOW_S,
    max_jobs: int = DURATION_MAX_JOBS,
) -> list[reports.KindDurations]:
    """Per kind, the run time percentiles of the jobs that succeeded in the last `window_s`
    seconds (of the `max_jobs` that finished last, whatever their outcome), by kind."""
    records = await db.fetch(queries.KIND_DURATIONS, window_s, max_jobs)
    return [reports.KindDurations.from_record(r) for r in records]
