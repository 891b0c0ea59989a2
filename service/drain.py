"""The serverless drain: run runnable storyboard jobs inside one HTTP request, within a budget.

A platform without a daemon (Vercel, Netlify, a Supabase edge cron) calls
`/api/worker/drain?budget_s=N` every minute or so. The request runs the same engine as
`python -m pgqueue.worker service.jobs:registry --burst --max-seconds N`: a `Worker` with the
service's handlers, the concurrency of `PGQUEUE_CONCURRENCY`, claiming until nothing is
runnable or the budget is nearly spent, then releasing what still runs without spending its
attempt. Leases fence it like any worker: overlapping drains never run one job twice, and a
drain whose process dies leaves leases that the next drain's reaper requeues.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import asyncpg

from pgqueue import QueueSettings, Worker
from service import jobs
from service.settings import ServiceSettings

# Drains one API process runs at once. Each opens a few server connections of its own (4); the
# limit keeps an API's connections bounded however often the drain is called. One, as a cron
# calls it: overlapping drains of one process would only share its CPU and event loop.
MAX_CONCURRENT_DRAINS = 1


def allowed_by_secret(settings: ServiceSettings, token: str) -> bool:
    """Whether `token` is the configured `CRON_SECRET` (compared in constant time)."""
    secret = settings.cron_secret
    return secret is not None and hmac.compare_digest(token.encode(), secret.encode())


class Drains:
    """The drains of one API process: at most `limit` at once, and all stopped with the server.

    Each drain is a `Worker` with a claim pool, a heartbeat and a listener of its own (4
    server connections, measured; 6 before its handlers shared the API's pool), so
    overlapping calls multiplied the API's connections (four took it from 6 to 31): a call
    past the limit runs nothing and says when to come back (`busy_for_s`). When the server stops
    (SIGTERM), every drain stops claiming, its running jobs get the worker's grace
    (`PGQUEUE_SHUTDOWN_GRACE_S`) to finish, and the rest go back to the queue without
    spending their attempt, as the worker daemon does: the request then answers, and the
    process exits without being killed mid-drain.

    Args:
        limit: drains running at once in this process.
    """

    def __init__(self, limit: int = MAX_CONCURRENT_DRAINS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 drain, got {limit}")
        self.limit = limit
        self._ends_at: dict[Worker, float] = {}  # each running drain's budgeted end (monotonic)
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Whether the server is stopping (a new drain then runs nothing)."""
        return self._stopping

    def busy_for_s(self) -> float | None:
        """None when a drain may start now; else the seconds until a running one is due to
        end (its budget, at most) or 0 while the server stops."""
        if self._stopping:
            return 0.0
        if len(self._ends_at) < self.limit:
            return None
        return max(0.0, min(self._ends_at.values()) - time.monotonic())

    async def run(
        self,
        settings: ServiceSettings,
        queue_settings: QueueSettings,
        budget_s: float,
        pool: asyncpg.Pool | None = None,
    ) -> dict[str, Any] | None:
        """Run storyboard jobs for at most `budget_s` seconds; what their attempts came to.

        Returns `{"ran", "succeeded", "failed", "retried", "released", "lost", "elapsed_s"}`:
        attempts started, and how those that ended did (see `pgqueue.worker.outcomes`). None,
        having run nothing, when `limit` drains run already or the server is stopping.

        Args:
            settings: the service's settings.
            queue_settings: the PGQUEUE_* settings the drain's worker runs with.
            budget_s: the most seconds the drain takes before it answers.
            pool: the API's pool, for the handlers' own reads and writes (None: their own).
        """
        if self.busy_for_s() is not None:
            return None
        # Registered before the first await: two calls arriving together cannot both pass.
        config = queue_settings.worker_config(
            burst=True, max_seconds=budget_s, queues=[settings.queue]
        )
        worker = Worker(settings.database(), jobs.create_registry(settings, pool=pool), config)
        started = time.monotonic()
        self._ends_at[worker] = started + budget_s
        try:
            await worker.run()
        finally:
            del self._ends_at[worker]
        return {**worker.outcomes.as_dict(), "elapsed_s": round(time.monotonic() - started, 3)}

    def stop(self) -> None:
        """The server stops: no drain starts from now on, and every running one stops
        claiming; its running jobs finish within the grace or are released."""
        self._stopping = True
        for worker in self._ends_at:
            worker.stop()
