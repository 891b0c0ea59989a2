"""`WorkerConfig`: every option of a worker, its default, its unit and its check, in one place.

`QueueSettings` (the `PGQUEUE_*` environment, read by the CLI) builds one of these; code that
builds a `Worker` itself passes one. Durations are seconds, and their names end in `_s`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import uuid
from collections.abc import Sequence

from pgqueue import retry

DEFAULT_QUEUES = ("default",)
DEFAULT_CONCURRENCY = 3
DEFAULT_LEASE_S = 30.0
DEFAULT_POLL_INTERVAL_S = 3.0
DEFAULT_SHUTDOWN_GRACE_S = 30.0
DEFAULT_BACKLOG_WARN = 10  # runnable jobs
DEFAULT_PROGRESS_INTERVAL_S = 1.0
DEFAULT_RETENTION_SUCCEEDED_S = 7 * 86400.0
DEFAULT_RETENTION_FAILED_S = 30 * 86400.0
DEFAULT_MAINTENANCE_INTERVAL_S = 60.0
DEFAULT_VACUUM_EVERY_JOBS = 20_000
# A handler may hold its transaction while it awaits something else (the heartbeat extends the
# lease at the end); only a session idle this long is taken for dead.
MIN_TRANSACTION_IDLE_S = 30.0
# Writes are batched, so a big worker needs few connections; handlers that hold connections
# for long inside ctx.transaction() may want more (pool_size=).
DEFAULT_MAX_POOL_SIZE = 20
MAX_DURATION_S = 365 * 86400.0  # no duration option may exceed a year


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a `Worker` runs.

    Args:
        queues: the queues to take jobs from.
        concurrency: the most jobs run at once.
        lease_s: a claimed job's lease; heartbeats renew it every third of it.
        poll_interval_s: how often to look for jobs when no notification arrives (an idle
            worker also wakes when the next delayed job is due).
        retry_policy: the backoff of failed attempts.
        shutdown_grace_s: on stop, how long running jobs may finish before they are cancelled
            and released without spending their attempt.
        burst: run what is runnable now, then stop.
        max_seconds: the run ends within this many seconds (None: no limit; with `burst`,
            a drain of bounded length). Claiming stops early enough for a typical attempt to
            finish (see `claim_margin_s`); what still runs at the end is cancelled and
            released without spending its attempt.
        backlog_warn: log a warning when more runnable jobs than this wait.
        progress_interval_s: the most often one job's progress is written.
        reap_interval_s: how often expired leases are looked for (None: a quarter lease).
        retention_succeeded_s: succeeded and cancelled jobs are deleted after this.
        retention_failed_s: failed jobs are deleted after this.
        maintenance_interval_s: how often retention runs.
        vacuum_every_jobs: VACUUM the queue's tables after this many jobs ran here (0: never).
            Every claimed job leaves a dead entry at the head of the claim index, and the
            claim walks past them until a vacuum; autovacuum looks at a table once a minute at
            best, by which time a busy worker has left a million of them (measured: 17k jobs/s
            fell to 13k within a minute; vacuuming every 20k jobs kept it flat, 0.3-0.5 s each).
        transaction_idle_limit_s: a handler's `ctx.transaction()` left idle this long is ended
            by the server (None: two leases, at least 30 s). A worker cut off from the database
            mid-transaction leaves its session idle in transaction, holding the job's row lock
            that every reaper skips, until TCP notices (hours by default); the limit bounds that.
        worker_id: this worker's name in `jobs.worker_id` (None: host, pid and a nonce).
        pool_size: connections for handlers' `ctx.transaction()` (None: concurrency + 3, at
            most DEFAULT_MAX_POOL_SIZE), opened only as handlers ask for them, with the
            server's default settings. The worker's own statements run on a second, small
            pool with generic plans and JIT off; the listener and the heartbeat have one
            connection each.
        synchronous_commit: False turns off `synchronous_commit` on the worker's connections:
            a commit no longer waits for the WAL flush (about a millisecond each here), and a
            database crash may forget the last fraction of a second of claims and outcomes.
            No job is lost by that (enqueues are the application's own, durable, commits): a
            forgotten claim or outcome only runs the job again, as a lost lease would.
    """

    queues: Sequence[str] = DEFAULT_QUEUES
    concurrency: int = DEFAULT_CONCURRENCY
    lease_s: float = DEFAULT_LEASE_S
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    retry_policy: retry.RetryPolicy = dataclasses.field(default_factory=retry.RetryPolicy)
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    burst: bool = False
    max_seconds: float | None = None
    backlog_warn: int = DEFAULT_BACKLOG_WARN
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    reap_interval_s: float | None = None
    retention_succeeded_s: float = DEFAULT_RETENTION_SUCCEEDED_S
    retention_failed_s: float = DEFAULT_RETENTION_FAILED_S
    maintenance_interval_s: float = DEFAULT_MAINTENANCE_INTERVAL_S
    vacuum_every_jobs: int = DEFAULT_VACUUM_EVERY_JOBS
    transaction_idle_limit_s: float | None = None
    worker_id: str | None = None
    pool_size: int | None = None
    synchronous_commit: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.queues, str):
            raise ValueError(f"queues is a list of names, e.g. queues=[{self.queues!r}]")
        queues = tuple(dict.fromkeys(self.queues))
        if not queues or not all(1 <= len(q) <= 128 for q in queues):
            raise ValueError("give at least one queue of 1-128 characters, e.g. ['default']")
        object.__setattr__(self, "queues", queues)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        positive = {
            "lease_s": self.lease_s,
            "poll_interval_s": self.poll_interval_s,
            "retention_succeeded_s": self.retention_succeeded_s,
            "retention_failed_s": self.retention_failed_s,
            "maintenance_interval_s": self.maintenance_interval_s,
        }
        if self.reap_interval_s is not None:
            positive["reap_interval_s"] = self.reap_interval_s
        if self.max_seconds is not None:
            positive["max_seconds"] = self.max_seconds
        if self.transaction_idle_limit_s is not None:
            positive["transaction_idle_limit_s"] = self.transaction_idle_limit_s
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name, value in (
            ("shutdown_grace_s", self.shutdown_grace_s),
            ("progress_interval_s", self.progress_interval_s),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
        for name, value in {**positive, "shutdown_grace_s": self.shutdown_grace_s}.items():
            if value > MAX_DURATION_S:
                raise ValueError(f"{name} must be at most a year ({MAX_DURATION_S:.0f} s)")
        if self.backlog_warn < 0 or self.vacuum_every_jobs < 0:
            raise ValueError("backlog_warn and vacuum_every_jobs must be >= 0")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")

    def claim_margin_s(self, mean_attempt_s: float | None) -> float:
        """How long before the end of `max_seconds` claiming stops.

        A job claimed too late is released unfinished, and its work (a paid upstream call)
        is wasted. The margin is the mean length of the attempts this run finished, at least
        a tenth of the budget (before any finished) and at most half of it, so that a drain
        with slow jobs still claims in its first half.
        """
        assert self.max_seconds is not None
        floor_s = self.max_seconds / 10
        return min(self.max_seconds / 2, max(floor_s, mean_attempt_s or 0.0))

    @property
    def transaction_idle_s(self) -> float:
        """How long a handler's `ctx.transaction()` may sit idle before the server ends it."""
        if self.transaction_idle_limit_s is not None:
            return self.transaction_idle_limit_s
        return max(2 * self.lease_s, MIN_TRANSACTION_IDLE_S)

    @property
    def reap_every_s(self) -> float:
        """Seconds between two looks for expired leases."""
        return self.reap_interval_s or max(0.05, self.lease_s / 4)

    @property
    def handler_pool_size(self) -> int:
        """Connections of the handlers' pool."""
        return self.pool_size or min(self.concurrency + 3, DEFAULT_MAX_POOL_SIZE)

    def resolved_worker_id(self) -> str:
        """`worker_id`, or a new name made of the host, the pid and a nonce."""
        return self.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
