"""Every SQL statement pgqueue runs about jobs, as named constants.

Only `store/` executes these. Each statement is a whole literal: what is sent to Postgres is
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
                          idempotency_key, concurrency_key, concurrency_limit, rate_limit_key)
SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
       coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
       coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
       l.concurrency_limit, l.rate_limit_key
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
         queue text, kind text, payload jsonb, priority int, run_at timestamptz,
         delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
         concurrency_key text, concurrency_limit int, rate_limit_key text))
     WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                          timeout_s, idempotency_key, concurrency_key, concurrency_limit,
                          rate_limit_key, position)
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
                              rate_limit_key)
    SELECT coalesce(l.queue, $2), l.kind, coalesce(l.payload, '{}'), coalesce(l.priority, 0),
           coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
           coalesce(l.max_attempts, $3), l.timeout_s, l.idempotency_key, l.concurrency_key,
           l.concurrency_limit, l.rate_limit_key
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
             queue text, kind text, payload jsonb, priority int, run_at timestamptz,
             delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
             concurrency_key text, concurrency_limit int, rate_limit_key text))
         WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                              timeout_s, idempotency_key, concurrency_key, concurrency_limit,
                              rate_limit_key, position)
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
# -- A paused queue (a row in paused_queues) is left alone: its anti-join is one probe of an
# -- empty index per queue when nothing is paused, and a claim that starts after a pause
# -- committed sees it (each statement takes its own snapshot).
# -- Rate limits (schema v7) follow the concurrency keys' pattern: the scan skips jobs of a key
# -- whose window is full or whose throttle runs (`next_start_at`, `paused_until`: one probe of
# -- a few-row table per keyed candidate, none for unkeyed ones); the limits CTE locks the
# -- candidates' keys FOR NO KEY UPDATE in key order, after the slots (the order every writer
# -- takes them in), and reads the starts still in their window as of the lock, so the count
# -- is exact across workers; chosen admits per key at most what is left. Each admitted start
# -- is appended by a row trigger (jobs_record_rate_limit_start, schema v7) at the end of this
# -- statement, under the lock taken here: no job is claimed that may not start. A trigger
# -- rather than a fourth CTE: an UPDATE CTE cost every claim 35 us (measured, 10 of 10k
# -- queued: 0.69 -> 0.73 ms) even with no keyed job, where the trigger's WHEN costs nothing.
CLAIM_JOBS = """
WITH candidates AS MATERIALIZED (
    SELECT c.*
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit,
               j.rate_limit_key
        FROM pgqueue.jobs AS j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
          AND j.kind = ANY ($5::text[])
          AND (j.concurrency_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.concurrency_slots AS s
                WHERE s.key = j.concurrency_key AND s.running >= j.concurrency_limit))
          AND (j.rate_limit_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.rate_limits AS r
                WHERE r.key = j.rate_limit_key
                  AND (r.next_start_at > now() OR r.paused_until > now())))
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $2
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pgqueue.paused_queues AS p WHERE p.queue = q.name)
), slots AS (
    SELECT s.key, s.running
    FROM pgqueue.concurrency_slots AS s
    WHERE s.key = ANY (ARRAY(SELECT concurrency_key FROM candidates))
    ORDER BY s.key
    FOR NO KEY UPDATE
), limits AS (
    SELECT r.key, r.capacity, r.paused_until,
           (SELECT count(*) FROM unnest(r.starts) AS t
            WHERE t > now() - make_interval(secs => r.period_s)) AS in_window
    FROM pgqueue.rate_limits AS r
    WHERE r.key = ANY (ARRAY(SELECT rate_limit_key FROM candidates))
    ORDER BY r.key
    FOR NO KEY UPDATE
), chosen AS (
    SELECT ranked.id
    FROM (
        SELECT c.id, c.priority, c.run_at,
               (c.concurrency_key IS NULL
                OR row_number() OVER (PARTITION BY c.concurrency_key
                                      ORDER BY c.priority, c.run_at, c.id)
                   <= c.concurrency_limit - coalesce(s.running, c.concurrency_limit))
               AND (l.key IS NULL
                    OR row_number() OVER (PARTITION BY c.rate_limit_key
                                          ORDER BY c.priority, c.run_at, c.id)
                       <= CASE WHEN l.paused_until > now() THEN 0
                               WHEN l.capacity IS NULL THEN 2147483647
                               ELSE l.capacity - l.in_window END) AS allowed
        FROM candidates AS c LEFT JOIN slots AS s ON s.key = c.concurrency_key
        LEFT JOIN limits AS l ON l.key = c.rate_limit_key
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
        SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit,
               j.rate_limit_key
        FROM pgqueue.jobs AS j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
          AND j.kind = ANY ($7::text[])
          AND (j.concurrency_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.concurrency_slots AS s
                WHERE s.key = j.concurrency_key
                  AND s.running - coalesce((SELECT f.n FROM freed AS f WHERE f.key = s.key), 0)
                      >= j.concurrency_limit))
          AND (j.rate_limit_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM pgqueue.rate_limits AS r
                WHERE r.key = j.rate_limit_key
                  AND (r.next_start_at > now() OR r.paused_until > now())))
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $4
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pgqueue.paused_queues AS p WHERE p.queue = q.name)
), slots AS (
    SELECT s.key, s.running
    FROM pgqueue.concurrency_slots AS s
    WHERE s.key = ANY (ARRAY(
        SELECT concurrency_key FROM candidates
        UNION ALL
        SELECT key FROM freed))
    ORDER BY s.key
    FOR NO KEY UPDATE
), limits AS (
    SELECT r.key, r.capacity, r.paused_until,
           (SELECT count(*) FROM unnest(r.starts) AS t
            WHERE t > now() - make_interval(secs => r.period_s)) AS in_window
    FROM pgqueue.rate_limits AS r
    WHERE r.key = ANY (ARRAY(SELECT rate_limit_key FROM candidates))
    ORDER BY r.key
    FOR NO KEY UPDATE
), chosen AS (
    SELECT ranked.id
    FROM (
        SELECT c.id, c.priority, c.run_at,
               (c.concurrency_key IS NULL
                OR row_number() OVER (PARTITION BY c.concurrency_key
                                      ORDER BY c.priority, c.run_at, c.id)
                   <= c.concurrency_limit
                      - coalesce(s.running - coalesce(f.n, 0), c.concurrency_limit))
               AND (l.key IS NULL
                    OR row_number() OVER (PARTITION BY c.rate_limit_key
                                          ORDER BY c.priority, c.run_at, c.id)
                       <= CASE WHEN l.paused_until > now() THEN 0
                               WHEN l.capacity IS NULL THEN 2147483647
                               ELSE l.capacity - l.in_window END) AS allowed
        FROM candidates AS c
        LEFT JOIN slots AS s ON s.key = c.concurrency_key
        LEFT JOIN freed AS f ON f.key = c.concurrency_key
        LEFT JOIN limits AS l ON l.key = c.rate_limit_key
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
# -- becomes runnable, or a rate-limit key holding back runnable jobs of theirs allows a start
# -- again (its window frees a start, or its throttle ends), whichever comes first (NULL:
# -- nothing waits), so an idle worker wakes for it, not at a poll. The keys are few (one
# -- per upstream), and each asks jobs_queued_rate_limit_key_idx for one held-back job.
SECONDS_UNTIL_DUE = """
SELECT extract(epoch FROM least(
    (SELECT min(run_at)
     FROM pgqueue.jobs
     WHERE state = 'queued' AND queue = ANY ($1::text[]) AND kind = ANY ($2::text[])
       AND run_at > now()),
    (SELECT min(greatest(r.next_start_at, r.paused_until))
     FROM pgqueue.rate_limits AS r
     WHERE greatest(r.next_start_at, r.paused_until) > now()
       AND EXISTS (
           SELECT 1 FROM pgqueue.jobs AS j
           WHERE j.rate_limit_key = r.key AND j.state = 'queued'
             AND j.queue = ANY ($1::text[]) AND j.kind = ANY ($2::text[])
             AND j.run_at <= now()))
) - now())::float8
"""

# -- seconds_until_key_allows: SECONDS_UNTIL_DUE's second half alone: how long until a
# -- rate-limit key holding back runnable jobs of the queues $1 and kinds $2 allows a start
# -- again (NULL: none holds any back). A budgeted burst run (a drain) waits that long rather
# -- than end with work its budget could still do.
SECONDS_UNTIL_KEY_ALLOWS = """
SELECT extract(epoch FROM min(greatest(r.next_start_at, r.paused_until)) - now())::float8
FROM pgqueue.rate_limits AS r
WHERE greatest(r.next_start_at, r.paused_until) > now()
  AND EXISTS (
      SELECT 1 FROM pgqueue.jobs AS j
      WHERE j.rate_limit_key = r.key AND j.state = 'queued'
        AND j.queue = ANY ($1::text[]) AND j.kind = ANY ($2::text[])
        AND j.run_at <= now())
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
# -- longer pause already set stays (two 429s never shorten each other's wait)
PAUSE_RATE_LIMIT_KEY = """
INSERT INTO pgqueue.rate_limits AS r (key, paused_until)
VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (key) DO UPDATE
SET paused_until = greatest(r.paused_until, EXCLUDED.paused_until), updated_at = now()
"""

# -- set_rate_limit: key $1 allows $2 starts in any window of $3 seconds from now on. The starts
# -- already in the new window count (changing a limit is no way to burst past it), and
# -- next_start_at is recomputed for the new limit, so the claim's scan and the workers'
# -- next-due lookup agree with it at once.
SET_RATE_LIMIT = """
INSERT INTO pgqueue.rate_limits AS r (key, capacity, period_s) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE
SET capacity = EXCLUDED.capacity, period_s = EXCLUDED.period_s, updated_at = now(),
    starts = ARRAY(SELECT t FROM unnest(r.starts) AS t
                   WHERE t > now() - make_interval(secs => $3::float8) ORDER BY t),
    next_start_at = (
        SELECT kept.starts[cardinality(kept.starts) - $2::int + 1]
               + make_interval(secs => $3::float8)
        FROM (SELECT ARRAY(SELECT t FROM unnest(r.starts) AS t
                           WHERE t > now() - make_interval(secs => $3::float8)
                           ORDER BY t) AS starts) AS kept
        WHERE cardinality(kept.starts) >= $2::int)
RETURNING r.key, r.capacity, r.period_s, r.paused_until
"""

# -- remove_rate_limit: key $1 has no limit any more (a throttle it carries still runs out)
REMOVE_RATE_LIMIT = """
UPDATE pgqueue.rate_limits
SET capacity = NULL, period_s = NULL, starts = '{}', next_start_at = NULL, updated_at = now()
WHERE key = $1
"""

# -- list_rate_limits: every key with a limit or a throttle, its starts in the current window
# -- and when it next allows one (NULL: now)
LIST_RATE_LIMITS = """
SELECT r.key, r.capacity, r.period_s, r.paused_until,
       cardinality(ARRAY(SELECT t FROM unnest(r.starts) AS t
                         WHERE t > now() - make_interval(secs => r.period_s))) AS recent_starts,
       nullif(greatest(r.next_start_at, r.paused_until, now()), now()) AS blocked_until
FROM pgqueue.rate_limits AS r
ORDER BY r.key
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

# -- list_jobs: a page of jobs, newest first, below the id $1 (keyset pagination: the page after
# -- one ending at id N asks for ids below N, so it costs the same at any depth and a job
# -- enqueued meanwhile never shifts the next page). Each filter is optional (NULL: any): queue
# -- $2, state $3, kind $4, and payload field $5 being one of $6; $7 rows at most. A backward
# -- scan of the primary key, stopping after $7 matches: 0.5-2 ms on 1M rows, at any depth; a
# -- filter matching few rows reads further (a kind on 1% of them: 2-9 ms; a payload field on
# -- 0.02%: 40-140 ms).
LIST_JOBS = """
SELECT * FROM pgqueue.jobs
WHERE id < $1
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::pgqueue.job_state IS NULL OR state = $3)
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR payload ->> $5 = ANY ($6::text[]))
ORDER BY id DESC
LIMIT $7
"""

# -- list_jobs_ended_badly: LIST_JOBS for $3 'failed' or 'cancelled', the states one looks for
# -- and that few rows are in: the literal IN list lets even a generic plan use the partial
# -- index jobs_ended_badly_idx, where LIST_JOBS would scan every succeeded row to find none
# -- (1M rows, no cancelled job: 266 ms; here well under 1 ms). Same parameters.
LIST_JOBS_ENDED_BADLY = """
SELECT * FROM pgqueue.jobs
WHERE id < $1 AND state IN ('failed', 'cancelled')
  AND ($2::text IS NULL OR queue = $2)
  AND state = $3::pgqueue.job_state
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR payload ->> $5 = ANY ($6::text[]))
ORDER BY id DESC
LIMIT $7
"""

# -- retry_job: a failed or cancelled job goes back to queued, runnable now, with a fresh attempt
# -- budget (its last error stays, to show why it was retried); its queue's workers are woken.
# -- No row: the job does not exist or is in another state (the caller reads which).
RETRY_JOB = """
WITH retried AS (
    UPDATE pgqueue.jobs
    SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, worker_id = NULL,
        cancel_requested_at = NULL, result = NULL
    WHERE id = $1 AND state IN ('failed', 'cancelled')
    RETURNING *
)
SELECT r.*, pg_notify('pgqueue_jobs', r.queue) FROM retried AS r
"""

# -- pause_queue: no claim takes jobs of queue $1 from now on (a no-op when paused already)
PAUSE_QUEUE = """
INSERT INTO pgqueue.paused_queues (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING
"""

# -- resume_queue: claims take jobs of queue $1 again; its workers are woken at once rather
# -- than at their next poll
RESUME_QUEUE = """
WITH resumed AS (
    DELETE FROM pgqueue.paused_queues WHERE queue = $1 RETURNING queue
)
SELECT pg_notify('pgqueue_jobs', $1) FROM (SELECT) AS one
"""

# -- queue_overview: per queue (any queue with jobs, counters or a pause), whether it is paused,
# -- the counts of queue_stats, how long its oldest runnable job has waited (since its run_at)
# -- and how many of its jobs finished in the last 5 minutes (the dated counters, not the jobs)
QUEUE_OVERVIEW = """
WITH names AS (
    SELECT queue FROM pgqueue.queue_stats
    UNION
    SELECT queue FROM pgqueue.paused_queues
)
SELECT n.queue, p.paused_at,
       coalesce(s.waiting, 0) AS waiting, coalesce(s.delayed, 0) AS delayed,
       coalesce(s.active, 0) AS active, coalesce(s.completed, 0) AS completed,
       coalesce(s.failed, 0) AS failed, coalesce(s.cancelled, 0) AS cancelled,
       (SELECT extract(epoch FROM now() - min(j.run_at))::float8
        FROM pgqueue.jobs AS j
        WHERE j.state = 'queued' AND j.queue = n.queue AND j.run_at <= now()
       ) AS oldest_waiting_s,
       (SELECT coalesce(sum(f.n), 0)::bigint
        FROM pgqueue.finished_counts AS f
        WHERE f.queue = n.queue AND f.minute >= date_trunc('minute', now()) - interval '4 minutes'
       ) AS finished_last_5m
FROM names AS n
LEFT JOIN pgqueue.queue_stats AS s ON s.queue = n.queue
LEFT JOIN pgqueue.paused_queues AS p ON p.queue = n.queue
ORDER BY n.queue
"""

# -- finished_per_minute: jobs finished in each of the last $2 minutes (the current one last),
# -- by outcome, of queue $1 (NULL: all queues); minutes without any read as zeros
FINISHED_PER_MINUTE = """
SELECT m.minute,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'succeeded'), 0)::bigint AS succeeded,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'failed'), 0)::bigint AS failed,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'cancelled'), 0)::bigint AS cancelled
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $2 - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN pgqueue.finished_counts AS f
       ON f.minute = m.minute AND ($1::text IS NULL OR f.queue = $1)
GROUP BY m.minute
ORDER BY m.minute
"""

# -- waiting_jobs: runnable jobs of the given queues (the backlog warning)
COUNT_WAITING = """
SELECT count(*) FROM pgqueue.jobs
WHERE state = 'queued' AND queue = ANY($1::text[]) AND run_at <= now()
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

# -- vacuum_queue_tables: what a busy worker runs between autovacuum's visits (outside any
# -- transaction; skips tables another VACUUM holds)
VACUUM_QUEUE_TABLES = """
VACUUM (SKIP_LOCKED) pgqueue.jobs, pgqueue.concurrency_slots, pgqueue.finished_counts
"""

# -- ping: is this connection still alive?
PING = """
SELECT 1
"""

# -- database_now: the database's clock (the scheduler's time)
DATABASE_NOW = """
SELECT now()
"""

# -- insert_schedule: a schedule seen for the first time starts at tick $5 without a job
INSERT_SCHEDULE = """
INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO NOTHING
RETURNING name
"""

# -- advance_schedule: move a schedule that is behind to tick $5 (no row: someone else did)
ADVANCE_SCHEDULE = """
UPDATE pgqueue.schedules
SET kind = $2, queue = $3, schedule = $4, last_tick = $5, next_tick = $6, updated_at = now()
WHERE name = $1 AND last_tick < $5
RETURNING name
"""

# -- set_schedule_job: the job a schedule's last tick became
SET_SCHEDULE_JOB = """
UPDATE pgqueue.schedules SET last_job_id = $2 WHERE name = $1
"""

# -- list_schedules: every schedule, by name
LIST_SCHEDULES = """
SELECT name, kind, queue, schedule, last_tick, next_tick, last_job_id, updated_at
FROM pgqueue.schedules ORDER BY name
"""

# -- settled_before: every job with finished_at before this instant has committed (or never
# -- will): finished_at is its transaction's now(), so a transaction still open can only write
# -- finished_at >= its xact_start. Taken before the read below, in a statement of its own, so
# -- that the read's snapshot is later than this one: whatever committed in between is seen.
SETTLED_BEFORE = """
SELECT greatest(least(clock_timestamp(), min(xact_start)),
                clock_timestamp() - make_interval(secs => $1)) AS settled_before
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""

# -- finished_between: the jobs that finished in [$1, $2), per queue, kind, state and duration
# -- bucket ($3: the buckets' upper bounds; width_bucket gives 0 below the first, n above the
# -- last, NULL for a job cancelled before it ever started). Served by jobs_finished_at_idx:
# -- it reads only the rows that finished since the last scrape, never the whole table.
FINISHED_BETWEEN = """
SELECT queue, kind, state::text AS state,
       width_bucket(extract(epoch FROM finished_at - started_at)::float8, $3::float8[]) AS bucket,
       count(*) AS jobs,
       coalesce(sum(extract(epoch FROM finished_at - started_at)::float8), 0) AS seconds
FROM pgqueue.jobs
WHERE finished_at >= $1 AND finished_at < $2
GROUP BY 1, 2, 3, 4
"""
