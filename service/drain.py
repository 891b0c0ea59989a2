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

from pgqueue import QueueSettings, Worker
from service import jobs
from service.settings import ServiceSettings


def allowed_by_secret(settings: ServiceSettings, token: str) -> bool:
    """Whether `token` is the configured `CRON_SECRET` (compared in constant time)."""
    secret = settings.cron_secret
    return secret is not None and hmac.compare_digest(token.encode(), secret.encode())


async def drain(
    settings: ServiceSettings, queue_settings: QueueSettings, budget_s: float
) -> dict[str, Any]:
    """Run storyboard jobs for at most `budget_s` seconds; what their attempts came to.

    Returns `{"ran", "succeeded", "failed", "retried", "released", "lost", "elapsed_s"}`:
    attempts started, and how those that ended did (see `pgqueue.worker.outcomes`).
    """
    config = queue_settings.worker_config(burst=True, max_seconds=budget_s, queues=[settings.queue])
    worker = Worker(settings.database(), jobs.create_registry(settings), config)
    started = time.monotonic()
    await worker.run()
    return {**worker.outcomes.as_dict(), "elapsed_s": round(time.monotonic() - started, 3)}
