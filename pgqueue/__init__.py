"""pgqueue: a durable job queue that lives in Postgres.

queue = Queue(pool)
await queue.enqueue("email.send", {"to": "a@example.com"})

registry = Registry()

@registry.handler("email.send")
async def send(ctx: JobContext) -> None: ...

await Worker(dsn, registry, WorkerConfig(concurrency=3)).run()
"""

from __future__ import annotations

from pgqueue.database import Database, PoolMode, pooler_hint
from pgqueue.errors import (
    ConfigurationError,
    DoNotRetry,
    JobCancelled,
    JobNotFound,
    JobStateConflict,
    LeaseLost,
    PgQueueError,
    RetryLater,
    SchemaMissing,
    UpstreamDown,
)
from pgqueue.logs import configure as configure_logging
from pgqueue.models import (
    Breaker,
    Job,
    JobSpec,
    JobState,
    RateLimit,
)
from pgqueue.queue import Queue
from pgqueue.registry import Registry
from pgqueue.reports import FinishedMinute, QueueInfo, QueueStats, Wait, WaitReason
from pgqueue.retry import RetryPolicy
from pgqueue.settings import QueueSettings
from pgqueue.worker import Event, JobContext, Worker, WorkerConfig

__all__ = [
    "Breaker",
    "ConfigurationError",
    "Database",
    "DoNotRetry",
    "Event",
    "FinishedMinute",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStateConflict",
    "LeaseLost",
    "PgQueueError",
    "PoolMode",
    "Queue",
    "QueueInfo",
    "QueueSettings",
    "QueueStats",
    "RateLimit",
    "Registry",
    "RetryLater",
    "RetryPolicy",
    "SchemaMissing",
    "UpstreamDown",
    "Wait",
    "WaitReason",
    "Worker",
    "WorkerConfig",
    "configure_logging",
    "pooler_hint",
]
