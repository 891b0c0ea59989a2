"""The job store: the only package in pgqueue that executes SQL about jobs.

Every function takes `db`, an asyncpg pool or connection (a connection joins whatever
transaction the caller has open), runs statements of the `queries` package (one module per
concept, named as the modules here), and returns values of `models.py`. The rest of pgqueue
(the `Queue` facade, the worker's parts) decides *what* to do; this package alone knows *how*
it is said to Postgres: which statement, which parameters, and how they are encoded
(`json.dumps` or typed arrays, never text spliced into SQL).

One module per concept, each name re-exported here (callers say `store.claim`):

    _common       the `Executor`, connections, rows to jobs
    enqueueing    enqueue, its grouping per pool, the NOTIFY of new jobs
    claims        claim (alone, or fused with completions), the next due time
    outcomes      an attempt's end: complete, fail, throttle, cancel, release
    leases        held jobs: renew, progress, the handler's transaction
    admin         get, cancel, list, retry, pause and resume, queue stats
    operations    the command line's listing by payload, bulk retry, purge by age
    bulk          every job of a filter: a bounded payload search, bulk retry and cancel
    live          what the dashboard polls: listed jobs' states, per-kind durations
    attempts      a job's attempt history
    workers       the workers' presence: beats, clean exits, the listing
    maintenance   the reaper, retention purges, vacuum
    ratelimits    rate limits of keys
    governor      breakers, adaptive rates, budgets, an attempt's upstream failure and cost
    schedules     periodic jobs' ticks, and whether a registry still has them
    sessions      the dashboard's signed-in sessions
    checkpoints   a step's value kept across a job's attempts (ctx.checkpoint)
    metrics       what a metrics scrape reads
    waiting       why queued jobs wait, and when they may be done
"""

from __future__ import annotations

from pgqueue.store._common import Executor
from pgqueue.store.admin import (
    MAX_JOB_ID,
    cancel_job,
    count_waiting,
    finished_per_minute,
    get_job,
    get_jobs,
    list_jobs,
    pause_queue,
    queue_overview,
    queue_stats,
    resume_queue,
    retry_job,
)
from pgqueue.store.attempts import list_attempts
from pgqueue.store.bulk import (
    SEARCH_WINDOW_IDS,
    cancel_matching,
    count_cancellable,
    count_retryable,
    list_jobs_containing,
    retry_matching,
)
from pgqueue.store.checkpoints import CheckpointRead, read_checkpoint, save_checkpoint
from pgqueue.store.claims import (
    ClaimRequest,
    advance_claim_marks,
    claim,
    complete_and_claim,
    seconds_until_due,
    seconds_until_key_allows,
)
from pgqueue.store.enqueueing import GROUP_MAX_ROWS, GROUP_MAX_SPECS, enqueue, notify_queues
from pgqueue.store.governor import (
    charge_attempt,
    fail_upstream,
    list_budgets,
    remove_breaker,
    remove_budget,
    set_adaptive_rate,
    set_breaker,
    set_budget,
)
from pgqueue.store.leases import (
    HeldLease,
    Renewal,
    extend_held,
    lock_held,
    renew,
    set_progress,
)
from pgqueue.store.live import DURATION_WINDOW_S, job_states, kind_durations
from pgqueue.store.maintenance import (
    PURGE_BATCH,
    PURGE_MAX_BATCHES,
    REAPER_IDLE_LIMIT_S,
    purge_finished,
    purge_idle_concurrency_slots,
    purge_idle_rate_limits,
    reap,
    vacuum,
)
from pgqueue.store.metrics import finished_between, settled_before
from pgqueue.store.operations import list_jobs_matching, purge_older_than, retry_ended_badly
from pgqueue.store.outcomes import (
    MAX_DELAY_S,
    Success,
    cancel_held,
    capped_delay_s,
    complete,
    complete_held,
    fail_attempt,
    release,
    throttle,
)
from pgqueue.store.ratelimits import list_rate_limits, remove_rate_limit, set_rate_limit
from pgqueue.store.schedules import (
    SCHEDULE_PRUNE_AFTER_S,
    SCHEDULE_STALE_AFTER_S,
    ScheduleTick,
    database_now,
    fire_schedule,
    list_schedules,
    mark_schedules_seen,
    prune_unseen_schedules,
)
from pgqueue.store.sessions import (
    close_session,
    open_session,
    purge_expired_sessions,
    read_session,
)
from pgqueue.store.waiting import LINE_READ_LIMIT, explain_waits
from pgqueue.store.workers import (
    STALE_KEPT_S,
    WorkerBeat,
    beat_worker,
    list_workers,
    prune_workers,
    remove_worker,
)

__all__ = [
    "DURATION_WINDOW_S",
    "GROUP_MAX_ROWS",
    "GROUP_MAX_SPECS",
    "LINE_READ_LIMIT",
    "MAX_DELAY_S",
    "MAX_JOB_ID",
    "PURGE_BATCH",
    "PURGE_MAX_BATCHES",
    "REAPER_IDLE_LIMIT_S",
    "SCHEDULE_PRUNE_AFTER_S",
    "SCHEDULE_STALE_AFTER_S",
    "SEARCH_WINDOW_IDS",
    "STALE_KEPT_S",
    "CheckpointRead",
    "ClaimRequest",
    "Executor",
    "HeldLease",
    "Renewal",
    "ScheduleTick",
    "Success",
    "WorkerBeat",
    "advance_claim_marks",
    "beat_worker",
    "cancel_held",
    "cancel_job",
    "cancel_matching",
    "capped_delay_s",
    "charge_attempt",
    "claim",
    "close_session",
    "complete",
    "complete_and_claim",
    "complete_held",
    "count_cancellable",
    "count_retryable",
    "count_waiting",
    "database_now",
    "enqueue",
    "explain_waits",
    "extend_held",
    "fail_attempt",
    "fail_upstream",
    "finished_between",
    "finished_per_minute",
    "fire_schedule",
    "get_job",
    "get_jobs",
    "job_states",
    "kind_durations",
    "list_attempts",
    "list_budgets",
    "list_jobs",
    "list_jobs_containing",
    "list_jobs_matching",
    "list_rate_limits",
    "list_schedules",
    "list_workers",
    "lock_held",
    "mark_schedules_seen",
    "notify_queues",
    "open_session",
    "pause_queue",
    "prune_unseen_schedules",
    "prune_workers",
    "purge_expired_sessions",
    "purge_finished",
    "purge_idle_concurrency_slots",
    "purge_idle_rate_limits",
    "purge_older_than",
    "queue_overview",
    "queue_stats",
    "read_checkpoint",
    "read_session",
    "reap",
    "release",
    "remove_breaker",
    "remove_budget",
    "remove_rate_limit",
    "remove_worker",
    "renew",
    "resume_queue",
    "retry_ended_badly",
    "retry_job",
    "retry_matching",
    "save_checkpoint",
    "seconds_until_due",
    "seconds_until_key_allows",
    "set_adaptive_rate",
    "set_breaker",
    "set_budget",
    "set_progress",
    "set_rate_limit",
    "settled_before",
    "throttle",
    "vacuum",
]
