"""Statements of enqueueing: insert a batch, read back its duplicates, wake the queues."""

from __future__ import annotations

# -- enqueue_jobs: insert a batch (one row per array element) through pgqueue.enqueue_batch,
# -- the insert the SQL interface's pgqueue.enqueue runs too (schema version 11: one
# -- implementation for every language); duplicates of an idempotency key are skipped there and
# -- read back by SELECT_JOBS_BY_IDEMPOTENCY_KEY in the same transaction. $1: a JSON array with
# -- one object per job, holding only the fields that differ from the defaults ($2: the queue,
# -- $3: max_attempts). One JSON document instead of eleven arrays: asyncpg encoded each array
# -- element by element, and a batch of 1000 went 1.6x faster.
ENQUEUE_JOBS = """
SELECT id, idempotency_key, run_at, created_at FROM pgqueue.enqueue_batch($1::jsonb, $2, $3)
"""

# -- enqueue_jobs_notify: ENQUEUE_JOBS inside a caller's own transaction, which pgqueue cannot see
# -- commit: the notification of each queue that got a job is queued in that transaction, and
# -- Postgres delivers it when the caller commits (and drops it on a rollback). Such a commit
# -- takes the notification lock (see pgqueue.notify); enqueues outside a caller's transaction
# -- use ENQUEUE_JOBS and NOTIFY_QUEUES after their commit instead.
ENQUEUE_JOBS_NOTIFY = """
WITH inserted AS (
    SELECT * FROM pgqueue.enqueue_batch($1::jsonb, $2, $3)
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
