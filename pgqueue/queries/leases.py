"""Statements of held jobs: renew, progress, the handler's transaction."""

from __future__ import annotations

# -- renew_leases: one statement for all of a worker's jobs; also writes throttled progress.
# -- Rows locked by someone else (a handler's own ctx.transaction(), the completer's write of
# -- the same job) are skipped rather than waited for: one handler's long transaction must not
# -- stall the heartbeat of every other job. Skipped rows that are still ours come back as
# -- `renewed = false` (busy); jobs missing from the result were lost.
# -- $1: job ids; $2: {"<id>": [lease_token, progress JSON text or null]}; $3: lease seconds.
RENEW_LEASES = """
WITH held AS (
    SELECT j.id FROM pgqueue.jobs AS j
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
), lockable AS (
    SELECT j.id FROM pgqueue.jobs AS j
    WHERE j.id = ANY (ARRAY(SELECT id FROM held)) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
    FOR NO KEY UPDATE SKIP LOCKED
), renewed AS (
    UPDATE pgqueue.jobs AS j
    SET lease_expires_at = now() + make_interval(secs => $3),
        progress = coalesce(($2::jsonb -> j.id::text ->> 1)::jsonb, j.progress)
    WHERE j.id = ANY (ARRAY(SELECT id FROM lockable))
    RETURNING j.id, j.cancel_requested_at IS NOT NULL AS cancel_requested
)
SELECT id, cancel_requested, true AS renewed FROM renewed
UNION ALL
SELECT id, false, false FROM held WHERE id NOT IN (SELECT id FROM renewed)
"""

# -- set_progress: fenced progress write from a running handler
SET_PROGRESS = """
UPDATE pgqueue.jobs SET progress = $3::jsonb
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING cancel_requested_at IS NOT NULL AS cancel_requested
"""

# -- lock_held_job: inside a handler's transaction, prove the lease is still ours and hold the
# -- row so the reaper cannot take it before the transaction commits.
LOCK_HELD_JOB = """
SELECT id, set_config('idle_in_transaction_session_timeout', $3, true) FROM pgqueue.jobs
WHERE id = $1 AND lease_token = $2 AND state = 'running'
FOR NO KEY UPDATE
"""

# -- extend_held_lease: at the end of a handler's transaction, which held the job's row locked
# -- (so the heartbeat skipped it), renew its lease as of the commit: clock_timestamp(), since
# -- now() inside a transaction is its start, and a long transaction may have outlived a lease.
EXTEND_HELD_LEASE = """
UPDATE pgqueue.jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND lease_token = $2 AND state = 'running'
"""
