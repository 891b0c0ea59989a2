"""Statements of an attempt's end, which store/outcomes.py runs: complete (in a batch, or in
the handler's own transaction), fail, throttle, cancel, release."""

from __future__ import annotations

# -- complete_jobs: fenced success of many jobs at once (the worker's group commit). A job that
# -- succeeded shows no current error: an earlier attempt's is in pgqueue.attempts (schema v12).
# -- Each success writes its attempt's row here, in the same statement, rather than through the
# -- trigger that records every other end of an attempt: one INSERT for the batch cost 3-7 us
# -- a job where the row trigger cost 20-40 (EXPLAIN ANALYZE of 50 completions, 20 us a job
# -- without either), and success is the path every job takes.
# -- $1: job ids; $2: {"<id>": [lease_token, result JSON text, progress JSON text or null]}.
COMPLETE_JOBS = """
WITH completed AS (
    UPDATE pgqueue.jobs AS j
    SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL, last_error = NULL,
        result = ($2::jsonb -> j.id::text ->> 1)::jsonb,
        progress = coalesce(($2::jsonb -> j.id::text ->> 2)::jsonb, j.progress)
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
    RETURNING j.id, j.attempts, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO pgqueue.attempts (job_id, attempt, worker_id, started_at, outcome)
    SELECT id, attempts, worker_id, started_at, 'succeeded' FROM completed
    WHERE attempts > 1  -- a first attempt's success is its job row (LIST_ATTEMPTS)
)
SELECT id FROM completed
"""

# -- complete_job: fenced success of one job, inside the handler's own transaction (complete_in);
# -- its attempt's row as COMPLETE_JOBS writes them
COMPLETE_JOB = """
WITH completed AS (
    UPDATE pgqueue.jobs
    SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL, last_error = NULL,
        result = $3::jsonb, progress = coalesce($4::jsonb, progress)
    WHERE id = $1 AND lease_token = $2 AND state = 'running'
    RETURNING *
), recorded AS (
    INSERT INTO pgqueue.attempts (job_id, attempt, worker_id, started_at, outcome)
    SELECT id, attempts, worker_id, started_at, 'succeeded' FROM completed
    WHERE attempts > 1  -- a first attempt's success is its job row (LIST_ATTEMPTS)
)
SELECT * FROM completed
"""

# -- fail_attempt: fenced failure; back to queued after $4 seconds when $3 (retryable) and
# -- attempts remain, else failed for good; cancelled when a cancel was requested meanwhile (a
# -- job someone cancelled must not run again). The database decides, from the row it locked.
FAIL_ATTEMPT = """
UPDATE pgqueue.jobs
SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'::pgqueue.job_state
                 WHEN $3 AND attempts < max_attempts THEN 'queued'::pgqueue.job_state
                 ELSE 'failed'::pgqueue.job_state END,
    run_at = CASE WHEN cancel_requested_at IS NULL AND $3 AND attempts < max_attempts
                  THEN now() + make_interval(secs => $4) ELSE run_at END,
    finished_at = CASE WHEN cancel_requested_at IS NULL AND $3 AND attempts < max_attempts
                       THEN NULL ELSE now() END,
    worker_id = CASE WHEN cancel_requested_at IS NULL AND $3 AND attempts < max_attempts
                     THEN NULL ELSE worker_id END,
    lease_expires_at = NULL,
    last_error = $5,
    progress = coalesce($6::jsonb, progress)
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING *
"""

# -- throttle_job: fenced; the handler said its upstream pushed back (RetryLater with
# -- throttle_s): the job goes back to queued after $3 seconds *without spending its attempt*
# -- (the claim counted one; this gives it back), since a busy upstream is no fault of the
# -- job's; a job whose cancel was requested ends cancelled. Only a job with a rate-limit key
# -- (the caller checked): PAUSE_RATE_LIMIT_KEY then pauses that key in the same transaction.
# -- This statement goes first: leaving `running` decrements the job's concurrency slot (a
# -- trigger), so the transaction locks slot then rate-limit row, the order claims lock them in.
THROTTLE_JOB = """
UPDATE pgqueue.jobs
SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'::pgqueue.job_state
                 ELSE 'queued'::pgqueue.job_state END,
    attempts = CASE WHEN cancel_requested_at IS NULL THEN attempts - 1 ELSE attempts END,
    run_at = CASE WHEN cancel_requested_at IS NULL
                  THEN now() + make_interval(secs => $3) ELSE run_at END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    worker_id = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE worker_id END,
    lease_expires_at = NULL,
    last_error = $4,
    progress = coalesce($5::jsonb, progress)
WHERE id = $1 AND lease_token = $2 AND state = 'running' AND rate_limit_key IS NOT NULL
RETURNING *
"""

# -- pause_rate_limit_key: no job of key $1 starts for $2 seconds from now(), on any worker; a
# -- longer pause already set stays (two 429s never shorten each other's wait). An adaptive key
# -- also cuts its rate (schema v8, pgqueue.throttle_rate_limit_key), unless the 429 refused its
# -- probe, or answered a call that started at $3 before such a refusal (schema v16).
PAUSE_RATE_LIMIT_KEY = """
SELECT pgqueue.throttle_rate_limit_key($1, $2::float8, $3::timestamptz)
"""

# -- upstream_failure_is_spared: would a transient failure of key $1's upstream spend no attempt
# -- now (its breaker is open or probing, or this failure opens it)? Read before the failure
# -- is written; see the function in schema v8.
UPSTREAM_FAILURE_IS_SPARED = """
SELECT pgqueue.upstream_failure_is_spared($1)
"""

# -- record_upstream_failure: key $1's breaker counts job $2's transient failure (it may open);
# -- written after the job's own statement, the last lock of the transaction. Returns the
# -- breaker's state (NULL: the key has no breaker).
RECORD_UPSTREAM_FAILURE = """
SELECT pgqueue.record_upstream_failure($1, $2)
"""

# -- cancel_held_job: fenced; the handler was cancelled on request
CANCEL_HELD_JOB = """
UPDATE pgqueue.jobs
SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL, last_error = $3
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING *
"""

# -- release_jobs: fenced; give jobs back at shutdown without spending their attempt, except
# -- that a job whose cancel was requested ends cancelled instead of running again.
# -- $1: job ids; $2: {"<id>": lease_token}.
RELEASE_JOBS = """
WITH released AS (
    UPDATE pgqueue.jobs AS j
    SET state = CASE WHEN j.cancel_requested_at IS NULL THEN 'queued'::pgqueue.job_state
                     ELSE 'cancelled'::pgqueue.job_state END,
        attempts = CASE WHEN j.cancel_requested_at IS NULL THEN j.attempts - 1
                        ELSE j.attempts END,
        run_at = CASE WHEN j.cancel_requested_at IS NULL THEN now() ELSE j.run_at END,
        finished_at = CASE WHEN j.cancel_requested_at IS NULL THEN NULL ELSE now() END,
        last_error = CASE WHEN j.cancel_requested_at IS NULL THEN j.last_error
                          ELSE 'cancelled while running' END,
        worker_id = CASE WHEN j.cancel_requested_at IS NULL THEN NULL ELSE j.worker_id END,
        lease_expires_at = NULL
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb ->> j.id::text)::bigint
    RETURNING j.id, j.queue, j.state
)
SELECT id, state, pg_notify('pgqueue_jobs', queue) FROM released
"""
