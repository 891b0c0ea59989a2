"""Every SQL statement pgqueue runs about jobs, as named constants.

Only `store.py` executes these. Each statement is a whole literal: what is sent to Postgres is
what is read here. Parameters are always `$n` placeholders, built with `json.dumps` or typed
arrays, never spliced into the text; table names are fixed. Each statement that changes a job
is a single statement decided by Postgres `now()`, and every write a worker makes about a job it
holds is fenced by `id + lease_token + state = 'running'`.

Batched fenced writes (complete, renew, reap, release) take the job ids as `bigint[]` and each
job's fields as one JSON object keyed by job id, read per row with `->`. They used to join
`unnest(...)` arrays instead, but a planner without statistics (a fresh table hit by a burst)
ran that join as a nested loop over the whole array for every row: 500 completions took 130 ms
instead of 3. A key lookup has no plan to get wrong. A job's result and progress travel inside
that object as JSON *text* (`->> n` then `::jsonb`): each is encoded once, by the job that
produced it, so a value that is not JSON fails only its own job, never the batch.
"""

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
                          idempotency_key, concurrency_key, concurrency_limit)
SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
       coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
       coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
       l.concurrency_limit
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
         queue text, kind text, payload jsonb, priority int, run_at timestamptz,
         delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
         concurrency_key text, concurrency_limit int))
     WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                          timeout_s, idempotency_key, concurrency_key, concurrency_limit,
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
                              idempotency_key, concurrency_key, concurrency_limit)
    SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
           coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
           coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
           l.concurrency_limit
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
             queue text, kind text, payload jsonb, priority int, run_at timestamptz,
             delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
             concurrency_key text, concurrency_limit int))
         WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                              timeout_s, idempotency_key, concurrency_key, concurrency_limit,
                              position)
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

# -- get_job: one job by id
GET_JOB = """
SELECT * FROM pgqueue.jobs WHERE id = $1
"""

# -- cancel_job: a queued job is cancelled at once; a running one is flagged for its worker,
# -- which cancels the handler within a heartbeat. Terminal jobs are left as they are.
CANCEL_JOB = """
UPDATE pgqueue.jobs
SET state = CASE WHEN state = 'queued' THEN 'cancelled'::pgqueue.job_state ELSE state END,
    finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
    last_error = CASE WHEN state = 'queued' THEN 'cancelled before it ran' ELSE last_error END,
    cancel_requested_at = CASE WHEN state = 'running' THEN now() ELSE cancel_requested_at END
WHERE id = $1 AND state IN ('queued', 'running')
RETURNING *
"""

# -- claim_jobs: take up to $2 runnable jobs of the queues $1 whose kinds $5 this worker has
# -- handlers for, in priority, run_at, id order. The lateral subquery scans jobs_claim_idx once
# -- per queue, skipping rows other workers hold and keys already at their limit. The slots CTE
# -- then locks the concurrency rows of the candidates' keys: FOR NO KEY UPDATE waits for a
# -- concurrent claimer and returns the count it committed, so the final check below is exact
# -- across workers (and, unlike FOR UPDATE, it does not wait for an enqueue, whose trigger
# -- holds its keys' rows FOR KEY SHARE until it commits). The attempt counts here.
# -- The UPDATE finds its rows through `id = ANY(array)`, and the slots CTE its keys the same
# -- way: a join would let the planner hash the whole table once it has a few tens of
# -- thousands of rows (measured: 24 ms vs 1 ms), and a generic plan (the worker's sessions
# -- use them) would scan every concurrency slot.
# -- Jobs of kinds this worker does not know stay queued for a worker that does (a rolling
# -- deploy's old workers leave the new kinds alone instead of failing them).
CLAIM_JOBS = """
WITH candidates AS MATERIALIZED (
    SELECT c.*
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit
        FROM pgqueue.jobs AS j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
          AND j.kind = ANY ($5::text[])
          AND (j.concurrency_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.concurrency_slots AS s
                WHERE s.key = j.concurrency_key AND s.running >= j.concurrency_limit))
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $2
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
), slots AS (
    SELECT s.key, s.running
    FROM pgqueue.concurrency_slots AS s
    WHERE s.key = ANY (ARRAY(SELECT concurrency_key FROM candidates))
    ORDER BY s.key
    FOR NO KEY UPDATE
), chosen AS (
    SELECT ranked.id
    FROM (
        SELECT c.id, c.priority, c.run_at,
               c.concurrency_key IS NULL
               OR row_number() OVER (PARTITION BY c.concurrency_key
                                     ORDER BY c.priority, c.run_at, c.id)
                  <= c.concurrency_limit - coalesce(s.running, c.concurrency_limit) AS allowed
        FROM candidates AS c LEFT JOIN slots AS s ON s.key = c.concurrency_key
    ) AS ranked
    WHERE ranked.allowed
    ORDER BY ranked.priority, ranked.run_at, ranked.id
    LIMIT $2
)
UPDATE pgqueue.jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    worker_id = $3,
    lease_token = nextval('pgqueue.lease_tokens'),
    lease_expires_at = now() + make_interval(secs => $4),
    started_at = now()
WHERE j.id = ANY (ARRAY(SELECT id FROM chosen))
RETURNING j.*
"""

# -- complete_jobs: fenced success of many jobs at once (the worker's group commit).
# -- $1: job ids; $2: {"<id>": [lease_token, result JSON text, progress JSON text or null]}.
COMPLETE_JOBS = """
UPDATE pgqueue.jobs AS j
SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL,
    result = ($2::jsonb -> j.id::text ->> 1)::jsonb,
    progress = coalesce(($2::jsonb -> j.id::text ->> 2)::jsonb, j.progress)
WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
  AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
RETURNING j.id
"""

# -- complete_and_claim_jobs: COMPLETE_JOBS ($1, $2) and CLAIM_JOBS ($3 queues, $4 limit,
# -- $5 worker, $6 lease seconds, $7 kinds) in one round trip, so a busy worker hands the slots
# -- of the jobs it finished straight to new ones. One row per claimed job (one row of NULLs
# -- when none was), the first of them carrying `completed_ids` (sent once, not once per row).
# -- The claim counts the concurrency slots these completions free (`freed`): their decrements
# -- (row triggers) only happen at the end of the statement, and a claim that saw the counts
# -- from before them gave a project's freed slot to another project, spreading the work so
# -- that the last project ran alone at its cap (measured: 10 projects x 6 shots on 6 slots
# -- took 11-12 rounds instead of 10). The slots CTE locks the completed jobs' keys too, in
# -- the same sorted order: nobody else changes those counts meanwhile, their decrements wait on
# -- nothing, and two such statements cannot deadlock.
COMPLETE_AND_CLAIM_JOBS = """
WITH completed AS (
    UPDATE pgqueue.jobs AS j
    SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL,
        result = ($2::jsonb -> j.id::text ->> 1)::jsonb,
        progress = coalesce(($2::jsonb -> j.id::text ->> 2)::jsonb, j.progress)
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
    RETURNING j.id, j.concurrency_key
), freed AS (
    SELECT concurrency_key AS key, count(*) AS n
    FROM completed WHERE concurrency_key IS NOT NULL
    GROUP BY concurrency_key
), candidates AS MATERIALIZED (
    SELECT c.*
    FROM unnest($3::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit
        FROM pgqueue.jobs AS j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
          AND j.kind = ANY ($7::text[])
          AND (j.concurrency_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.concurrency_slots AS s
                WHERE s.key = j.concurrency_key
                  AND s.running - coalesce((SELECT f.n FROM freed AS f WHERE f.key = s.key), 0)
                      >= j.concurrency_limit))
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $4
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
), slots AS (
    SELECT s.key, s.running
    FROM pgqueue.concurrency_slots AS s
    WHERE s.key = ANY (ARRAY(
        SELECT concurrency_key FROM candidates
        UNION ALL
        SELECT key FROM freed))
    ORDER BY s.key
    FOR NO KEY UPDATE
), chosen AS (
    SELECT ranked.id
    FROM (
        SELECT c.id, c.priority, c.run_at,
               c.concurrency_key IS NULL
               OR row_number() OVER (PARTITION BY c.concurrency_key
                                     ORDER BY c.priority, c.run_at, c.id)
                  <= c.concurrency_limit
                     - coalesce(s.running - coalesce(f.n, 0), c.concurrency_limit) AS allowed
        FROM candidates AS c
        LEFT JOIN slots AS s ON s.key = c.concurrency_key
        LEFT JOIN freed AS f ON f.key = c.concurrency_key
    ) AS ranked
    WHERE ranked.allowed
    ORDER BY ranked.priority, ranked.run_at, ranked.id
    LIMIT $4
), claimed AS (
    UPDATE pgqueue.jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        worker_id = $5,
        lease_token = nextval('pgqueue.lease_tokens'),
        lease_expires_at = now() + make_interval(secs => $6),
        started_at = now()
    WHERE j.id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING j.*
)
SELECT CASE WHEN claimed.id IS NOT DISTINCT FROM (SELECT min(id) FROM claimed)
            THEN (SELECT array_agg(id) FROM completed) END AS completed_ids,
       claimed.*
FROM (SELECT) AS one LEFT JOIN claimed ON true
"""

# -- seconds_until_due: how long until the next delayed job of the queues $1 and kinds $2
# -- becomes runnable (NULL: none is waiting), so an idle worker wakes for it, not at a poll
SECONDS_UNTIL_DUE = """
SELECT extract(epoch FROM min(run_at) - now())::float8
FROM pgqueue.jobs
WHERE state = 'queued' AND queue = ANY ($1::text[]) AND kind = ANY ($2::text[])
  AND run_at > now()
"""

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

# -- complete_job: fenced success
COMPLETE_JOB = """
UPDATE pgqueue.jobs
SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL,
    result = $3::jsonb, progress = coalesce($4::jsonb, progress)
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING *
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

# -- queue_stats: one row per queue
QUEUE_STATS = """
SELECT queue, waiting, delayed, active, completed, failed, cancelled
FROM pgqueue.queue_stats ORDER BY queue
"""

# -- waiting_jobs: runnable jobs of the given queues (the backlog warning)
COUNT_WAITING = """
SELECT count(*) FROM pgqueue.jobs
WHERE state = 'queued' AND queue = ANY($1::text[]) AND run_at <= now()
"""

# -- fold_finished_counts: collapse the counters' delta rows into one row per queue and state
FOLD_FINISHED_COUNTS = """
WITH folded AS (
    DELETE FROM pgqueue.finished_counts RETURNING queue, state, n
)
INSERT INTO pgqueue.finished_counts (queue, state, n)
SELECT queue, state, sum(n) FROM folded GROUP BY queue, state HAVING sum(n) <> 0
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

# -- vacuum_queue_tables: what a busy worker runs between autovacuum's visits (outside any
# -- transaction; skips tables another VACUUM holds)
VACUUM_QUEUE_TABLES = """
VACUUM (SKIP_LOCKED) pgqueue.jobs, pgqueue.concurrency_slots, pgqueue.finished_counts
"""

# -- ping: is this connection still alive?
PING = """
SELECT 1
"""
