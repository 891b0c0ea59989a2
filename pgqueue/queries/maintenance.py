"""Statements of maintenance: the reaper, idle concurrency slots, counters, retention, vacuum."""

from __future__ import annotations

# -- try_reaper_lock: one reaper at a time across all workers (transaction-scoped)
TRY_REAPER_LOCK = """
SELECT pg_try_advisory_xact_lock(hashtext('pgqueue.reaper'))
       AND set_config('idle_in_transaction_session_timeout', $1, true) IS NOT NULL
"""

# -- select_expired_leases: running jobs whose lease ended, locked for the reaper's transaction
SELECT_EXPIRED_LEASES = """
SELECT id, attempts FROM pgqueue.jobs
WHERE state = 'running' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# -- reap_jobs: expired leases go back to queued after their backoff, or to failed when their
# -- attempts are spent, or to cancelled when a cancel was pending. The lost attempt counts.
# -- $1: job ids; $2: {"<id>": backoff seconds}.
REAP_JOBS = """
WITH reaped AS (
    UPDATE pgqueue.jobs AS j
    SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'::pgqueue.job_state
                     WHEN j.attempts < j.max_attempts THEN 'queued'::pgqueue.job_state
                     ELSE 'failed'::pgqueue.job_state END,
        run_at = CASE WHEN j.cancel_requested_at IS NULL AND j.attempts < j.max_attempts
                      THEN now() + make_interval(secs => ($2::jsonb ->> j.id::text)::float8)
                      ELSE j.run_at END,
        finished_at = CASE WHEN j.cancel_requested_at IS NULL AND j.attempts < j.max_attempts
                           THEN NULL ELSE now() END,
        last_error = 'lease expired: worker ' || j.worker_id || ' stopped heartbeating',
        worker_id = NULL,
        lease_expires_at = NULL
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_expires_at < now()
    RETURNING j.*
)
SELECT * FROM reaped
"""

# -- lock_idle_concurrency_slots: up to $1 slot rows that count no running job and that no live
# -- job uses (as of this statement), locked for PURGE_IDLE_CONCURRENCY_SLOTS. SKIP LOCKED
# -- passes by the rows an uncommitted enqueue holds (FOR KEY SHARE, schema v3).
LOCK_IDLE_CONCURRENCY_SLOTS = """
SELECT c.key FROM pgqueue.concurrency_slots AS c
WHERE c.running = 0
  AND NOT EXISTS (
      SELECT 1 FROM pgqueue.jobs AS j
      WHERE j.concurrency_key = c.key AND j.state IN ('queued', 'running'))
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# -- purge_idle_concurrency_slots: delete the locked rows $1 that are still idle. A statement of
# -- its own, in the same transaction, so that its snapshot, taken after the locks, sees every
# -- enqueue that committed before them (one after them waits for this transaction and then
# -- puts its row back).
PURGE_IDLE_CONCURRENCY_SLOTS = """
DELETE FROM pgqueue.concurrency_slots AS s
WHERE s.key = ANY ($1::text[]) AND s.running = 0
  AND NOT EXISTS (
      SELECT 1 FROM pgqueue.jobs AS j
      WHERE j.concurrency_key = s.key AND j.state IN ('queued', 'running'))
"""

# -- fold_finished_counts: collapse the counters' delta rows into one row per queue, state and
# -- minute for the last hour (the dashboard's chart reads those), and one undated row per queue
# -- and state for everything older (the totals of queue_stats sum them all alike)
FOLD_FINISHED_COUNTS = """
WITH folded AS (
    DELETE FROM pgqueue.finished_counts RETURNING queue, state, minute, n
)
INSERT INTO pgqueue.finished_counts (queue, state, minute, n)
SELECT queue, state, kept, sum(n)
FROM (
    SELECT queue, state, n,
           CASE WHEN minute >= date_trunc('minute', now()) - interval '1 hour' THEN minute END
               AS kept
    FROM folded
) AS dated
GROUP BY queue, state, kept HAVING sum(n) <> 0
"""

# -- purge_finished: delete at most $3 jobs in the states $1 finished before now() - $2 seconds
# -- (`id = ANY(ARRAY(...))`, not `id IN (...)`: the latter may hash-join a scan of the table)
PURGE_FINISHED = """
DELETE FROM pgqueue.jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM pgqueue.jobs
    WHERE finished_at < now() - make_interval(secs => $2) AND state = ANY($1::pgqueue.job_state[])
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
))
"""

# -- purge_idle_rate_limits: delete up to $1 rate-limit rows that hold nothing any more: no limit,
# -- no breaker, no adaptive rate, and no throttle still running. A 429 on a key without a
# -- limit leaves such a row (one per key: with per-tenant keys, one per tenant, for ever).
# -- SKIP LOCKED passes by the rows a claim or a handler holds; a throttle or a limit written
# -- meanwhile either commits first (the DELETE re-checks the row it waited for) or inserts its
# -- row anew after this commits.
PURGE_IDLE_RATE_LIMITS = """
DELETE FROM pgqueue.rate_limits
WHERE key = ANY (ARRAY(
    SELECT key FROM pgqueue.rate_limits
    WHERE capacity IS NULL AND breaker_threshold IS NULL AND NOT adaptive
      AND (paused_until IS NULL OR paused_until < now())
      AND (breaker_until IS NULL OR breaker_until < now())
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
  AND capacity IS NULL AND breaker_threshold IS NULL AND NOT adaptive
  AND (paused_until IS NULL OR paused_until < now())
  AND (breaker_until IS NULL OR breaker_until < now())
"""

# -- vacuum_queue_tables: what a busy worker runs between autovacuum's visits (outside any
# -- transaction; skips tables another VACUUM holds)
VACUUM_QUEUE_TABLES = """
VACUUM (SKIP_LOCKED) pgqueue.jobs, pgqueue.concurrency_slots, pgqueue.finished_counts,
    pgqueue.claim_marks
"""

# -- dead_jobs_left: the dead row versions of pgqueue.jobs as the last VACUUM left them (those
# -- some snapshot may still see; NULL without statistics)
DEAD_JOBS_LEFT = """
SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass
"""
