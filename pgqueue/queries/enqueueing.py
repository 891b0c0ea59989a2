"""Statements of enqueueing: insert a batch, read back its duplicates, wake the queues."""

from __future__ import annotations

# -- enqueue_jobs: insert a batch (one row per array element); duplicates of an idempotency key
# -- are skipped here and read back by SELECT_JOBS_BY_IDEMPOTENCY_KEY in the same transaction.
# -- Keyed rows go in in key order, so concurrent batches sharing keys wait for each other in
# -- one global order instead of deadlocking; unkeyed rows keep the caller's order (and ids).
# -- $1: a JSON array with one object per job, holding only the fields that differ from the
# -- defaults ($2: the queue, $3: max_attempts). One JSON document instead of eleven arrays:
# -- asyncpg encoded each array element by element, and a batch of 1000 went 1.6x faster.
ENQUEUE_JOBS = """
INSERT INTO pgqueue.jobs (queue, kind, payload, priority, run_at, max_attempts, timeout_s,
                          idempotency_key, concurrency_key, concurrency_limit, rate_limit_key,
                          fairness_key, fairness_weight, cost, budget_keys)
SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
       coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
       coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
       l.concurrency_limit, l.rate_limit_key, l.fairness_key, l.fairness_weight, l.cost,
       l.budget_keys
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
         queue text, kind text, payload jsonb, priority int, run_at timestamptz,
         delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
         concurrency_key text, concurrency_limit int, rate_limit_key text, fairness_key text,
         fairness_weight real, cost numeric, budget_keys text[]))
     WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                          timeout_s, idempotency_key, concurrency_key, concurrency_limit,
                          rate_limit_key, fairness_key, fairness_weight, cost, budget_keys,
                          position)
ORDER BY l.idempotency_key NULLS FIRST, l.position
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, idempotency_key, run_at, created_at
"""

# -- enqueue_jobs_notify: ENQUEUE_JOBS inside a caller's own transaction, which pgqueue cannot see
# -- commit: the notification of each queue that got a job is queued in that transaction, and
# -- Postgres delivers it when the caller commits (and drops it on a rollback). Such a commit
# -- takes the notification lock (see pgqueue.notify); enqueues outside a caller's transaction
# -- use ENQUEUE_JOBS and NOTIFY_QUEUES after their commit instead.
ENQUEUE_JOBS_NOTIFY = """
WITH inserted AS (
    INSERT INTO pgqueue.jobs (queue, kind, payload, priority, run_at, max_attempts, timeout_s,
                              idempotency_key, concurrency_key, concurrency_limit,
                              rate_limit_key, fairness_key, fairness_weight, cost,
                              budget_keys)
    SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
           coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
           coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
           l.concurrency_limit, l.rate_limit_key, l.fairness_key, l.fairness_weight, l.cost,
           l.budget_keys
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
             queue text, kind text, payload jsonb, priority int, run_at timestamptz,
             delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
             concurrency_key text, concurrency_limit int, rate_limit_key text,
             fairness_key text, fairness_weight real, cost numeric, budget_keys text[]))
         WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                              timeout_s, idempotency_key, concurrency_key, concurrency_limit,
                              rate_limit_key, fairness_key, fairness_weight, cost,
                              budget_keys, position)
    ORDER BY l.idempotency_key NULLS FIRST, l.position
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, idempotency_key, run_at, created_at, queue
), notified AS (
    SELECT count(pg_notify('pgqueue_jobs', queue)) AS queues
    FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT i.id, i.idempotency_key, i.run_at, i.created_at FROM inserted AS i, notified
"""

# -- notify_queues: wake the workers of the queues $1 (text[]) about jobs that have committed;
# -- its own autocommit transaction, sent once per round by pgqueue.notify.
NOTIFY_QUEUES = """
SELECT pg_notify('pgqueue_jobs', queue) FROM unnest($1::text[]) AS queue
"""

# -- select_jobs_by_idempotency_key: the existing jobs that a batch's duplicates refer to
SELECT_JOBS_BY_IDEMPOTENCY_KEY = """
SELECT * FROM pgqueue.jobs WHERE idempotency_key = ANY($1::text[])
"""
