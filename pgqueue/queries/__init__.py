"""Every SQL statement pgqueue runs about jobs, as named constants.

Only `store/` executes these (and the listener its `PING`). Each statement is a whole
literal: what is sent to Postgres is what is read here. Parameters are always `$n`
placeholders, built with `json.dumps` or typed arrays, never spliced into the text; table
names are fixed. Each statement that changes a job is a single statement decided by Postgres
`now()`, and every write a worker makes about a job it holds is fenced by
`id + lease_token + state = 'running'`.

Batched fenced writes (complete, renew, reap, release) take the job ids as `bigint[]` and each
job's fields as one JSON object keyed by job id, read per row with `->`. They used to join
`unnest(...)` arrays instead, but a planner without statistics (a fresh table hit by a burst)
ran that join as a nested loop over the whole array for every row: 500 completions took 130 ms
instead of 3. A key lookup has no plan to get wrong. A job's result and progress travel inside
that object as JSON *text* (`->> n` then `::jsonb`): each is encoded once, by the job that
produced it, so a value that is not JSON fails only its own job, never the batch.

One module per concept, mirroring the store package (`store/`), each name re-exported
here (callers say `queries.CLAIM_JOBS`):

    enqueueing    enqueue (plain, or notifying inside a caller's transaction), duplicates, NOTIFY
    claims        claim, the claim fused with completions, the next due time
    marks         the claim marks: where claims start, moved past the jobs claimed
    outcomes      an attempt's end: complete, fail, throttle, cancel, release
    leases        held jobs: renew, progress, the handler's transaction
    admin         get, cancel, list, retry, pause and resume, queue stats and overview
    operations    the command line's listing by payload, bulk retry
    bulk          every job of a filter: a bounded payload search, bulk retry and cancel
    live          what the dashboard polls: listed jobs' states, per-kind durations
    attempts      a job's attempt history
    workers       the workers' presence
    maintenance   the reaper, idle concurrency slots, counters, retention purges, vacuum
    ratelimits    rate limits of keys
    governor      breakers, adaptive rates, budgets, an attempt's reported cost
    schedules     periodic jobs' ticks, the database's clock
    sessions      the dashboard's signed-in sessions
    checkpoints   a step's value kept across a job's attempts (ctx.checkpoint)
    metrics       what a metrics scrape reads
    waiting       why queued jobs wait, and when they may be done
    connections   the listener's keep-alive ping
"""

from __future__ import annotations

from pgqueue.queries.admin import (
    CANCEL_JOB,
    COUNT_WAITING,
    FINISHED_PER_MINUTE,
    GET_JOB,
    GET_JOBS,
    LIST_JOBS,
    LIST_JOBS_ENDED_BADLY,
    LIST_JOBS_OF_KIND,
    PAUSE_QUEUE,
    QUEUE_OVERVIEW,
    QUEUE_STATS,
    RESUME_QUEUE,
    RETRY_JOB,
)
from pgqueue.queries.attempts import (
    LIST_ATTEMPTS,
)
from pgqueue.queries.bulk import (
    CANCEL_MATCHING,
    COUNT_CANCELLABLE,
    COUNT_RETRYABLE,
    JOB_ID_CEILING,
    LIST_JOBS_CONTAINING,
    RETRY_MATCHING,
)
from pgqueue.queries.checkpoints import (
    READ_CHECKPOINT,
    SAVE_CHECKPOINT,
)
from pgqueue.queries.claims import (
    CLAIM_JOBS,
    COMPLETE_AND_CLAIM_JOBS,
    SECONDS_UNTIL_DUE,
    SECONDS_UNTIL_KEY_ALLOWS,
)
from pgqueue.queries.connections import (
    PING,
)
from pgqueue.queries.enqueueing import (
    ENQUEUE_JOBS,
    ENQUEUE_JOBS_NOTIFY,
    NOTIFY_QUEUES,
    SELECT_JOBS_BY_IDEMPOTENCY_KEY,
)
from pgqueue.queries.governor import (
    CHARGE_ATTEMPT,
    CLEAR_ADAPTIVE,
    LIST_BUDGETS,
    REMOVE_BREAKER,
    REMOVE_BUDGET,
    SET_ADAPTIVE_RATE,
    SET_BREAKER,
    SET_BUDGET,
)
from pgqueue.queries.leases import (
    EXTEND_HELD_LEASE,
    LOCK_HELD_JOB,
    RENEW_LEASES,
    SET_PROGRESS,
)
from pgqueue.queries.live import JOB_STATES, KIND_DURATIONS
from pgqueue.queries.maintenance import (
    DEAD_JOBS_LEFT,
    FOLD_FINISHED_COUNTS,
    LOCK_IDLE_CONCURRENCY_SLOTS,
    PURGE_FINISHED,
    PURGE_IDLE_CONCURRENCY_SLOTS,
    PURGE_IDLE_RATE_LIMITS,
    REAP_JOBS,
    SELECT_EXPIRED_LEASES,
    TRY_REAPER_LOCK,
    VACUUM_QUEUE_TABLES,
)
from pgqueue.queries.marks import (
    ADVANCE_CLAIM_MARKS,
    LOCK_CLAIM_MARKS,
)
from pgqueue.queries.metrics import (
    FINISHED_BETWEEN,
    SETTLED_BEFORE,
)
from pgqueue.queries.operations import (
    LIST_JOBS_MATCHING,
)
from pgqueue.queries.outcomes import (
    CANCEL_HELD_JOB,
    COMPLETE_JOB,
    COMPLETE_JOBS,
    FAIL_ATTEMPT,
    PAUSE_RATE_LIMIT_KEY,
    RECORD_UPSTREAM_FAILURE,
    RELEASE_JOBS,
    THROTTLE_JOB,
    UPSTREAM_FAILURE_IS_SPARED,
)
from pgqueue.queries.ratelimits import (
    LIST_RATE_LIMITS,
    REMOVE_RATE_LIMIT,
    SET_RATE_LIMIT,
)
from pgqueue.queries.schedules import (
    ADVANCE_SCHEDULE,
    DATABASE_NOW,
    INSERT_SCHEDULE,
    LIST_SCHEDULES,
    MARK_SCHEDULES_SEEN,
    PRUNE_UNSEEN_SCHEDULES,
    SET_SCHEDULE_JOB,
)
from pgqueue.queries.sessions import (
    CLOSE_SESSION,
    OPEN_SESSION,
    PURGE_EXPIRED_SESSIONS,
    READ_SESSION,
)
from pgqueue.queries.waiting import (
    EXPLAIN_WAITS,
)
from pgqueue.queries.workers import (
    BEAT_WORKER,
    LIST_WORKERS,
    PRUNE_WORKERS,
    REMOVE_WORKER,
)

__all__ = [
    "ADVANCE_CLAIM_MARKS",
    "ADVANCE_SCHEDULE",
    "BEAT_WORKER",
    "CANCEL_HELD_JOB",
    "CANCEL_JOB",
    "CANCEL_MATCHING",
    "CHARGE_ATTEMPT",
    "CLAIM_JOBS",
    "CLEAR_ADAPTIVE",
    "CLOSE_SESSION",
    "COMPLETE_AND_CLAIM_JOBS",
    "COMPLETE_JOB",
    "COMPLETE_JOBS",
    "COUNT_CANCELLABLE",
    "COUNT_RETRYABLE",
    "COUNT_WAITING",
    "DATABASE_NOW",
    "DEAD_JOBS_LEFT",
    "ENQUEUE_JOBS",
    "ENQUEUE_JOBS_NOTIFY",
    "EXPLAIN_WAITS",
    "EXTEND_HELD_LEASE",
    "FAIL_ATTEMPT",
    "FINISHED_BETWEEN",
    "FINISHED_PER_MINUTE",
    "FOLD_FINISHED_COUNTS",
    "GET_JOB",
    "GET_JOBS",
    "INSERT_SCHEDULE",
    "JOB_ID_CEILING",
    "JOB_STATES",
    "KIND_DURATIONS",
    "LIST_ATTEMPTS",
    "LIST_BUDGETS",
    "LIST_JOBS",
    "LIST_JOBS_CONTAINING",
    "LIST_JOBS_ENDED_BADLY",
    "LIST_JOBS_MATCHING",
    "LIST_JOBS_OF_KIND",
    "LIST_RATE_LIMITS",
    "LIST_SCHEDULES",
    "LIST_WORKERS",
    "LOCK_CLAIM_MARKS",
    "LOCK_HELD_JOB",
    "LOCK_IDLE_CONCURRENCY_SLOTS",
    "MARK_SCHEDULES_SEEN",
    "NOTIFY_QUEUES",
    "OPEN_SESSION",
    "PAUSE_QUEUE",
    "PAUSE_RATE_LIMIT_KEY",
    "PING",
    "PRUNE_UNSEEN_SCHEDULES",
    "PRUNE_WORKERS",
    "PURGE_EXPIRED_SESSIONS",
    "PURGE_FINISHED",
    "PURGE_IDLE_CONCURRENCY_SLOTS",
    "PURGE_IDLE_RATE_LIMITS",
    "QUEUE_OVERVIEW",
    "QUEUE_STATS",
    "READ_CHECKPOINT",
    "READ_SESSION",
    "REAP_JOBS",
    "RECORD_UPSTREAM_FAILURE",
    "RELEASE_JOBS",
    "REMOVE_BREAKER",
    "REMOVE_BUDGET",
    "REMOVE_RATE_LIMIT",
    "REMOVE_WORKER",
    "RENEW_LEASES",
    "RESUME_QUEUE",
    "RETRY_JOB",
    "RETRY_MATCHING",
    "SAVE_CHECKPOINT",
    "SECONDS_UNTIL_DUE",
    "SECONDS_UNTIL_KEY_ALLOWS",
    "SELECT_EXPIRED_LEASES",
    "SELECT_JOBS_BY_IDEMPOTENCY_KEY",
    "SETTLED_BEFORE",
    "SET_ADAPTIVE_RATE",
    "SET_BREAKER",
    "SET_BUDGET",
    "SET_PROGRESS",
    "SET_RATE_LIMIT",
    "SET_SCHEDULE_JOB",
    "THROTTLE_JOB",
    "TRY_REAPER_LOCK",
    "UPSTREAM_FAILURE_IS_SPARED",
    "VACUUM_QUEUE_TABLES",
]
