"""Statements of claims: take runnable jobs (alone or fused with completions), the next due time."""

from __future__ import annotations

# -- claim_jobs: take up to $2 runnable jobs of the queues $1 whose kinds $5 this worker has
# -- handlers for, in priority, run_at, id order. The lateral subquery scans jobs_claim_idx once
# -- per queue and priority, from that priority's claim mark (schema v15: no runnable job lies
# -- before it, and the entries a held snapshot keeps dead do), skipping rows other workers
# -- hold and keys already at their limit. The marks are read in priority order (their primary
# -- key) and the nested loop keeps it, so the outer LIMIT stops at the first priorities that
# -- fill it; chosen orders the candidates exactly. The slots CTE
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
# -- The governor (schema v8) adds two things here. A key's breaker holds its jobs like a
# -- throttle (`breaker_until` in the scan), and once its open period passed the key admits one
# -- job, the probe, whose start (the same trigger) marks the breaker half-open. Budgets: the
# -- scan skips a job whose cost does not fit one of its budgets (a probe per key of a budgeted
# -- candidate, none for others); the budgets CTE locks the candidates' budget rows FOR NO KEY
# -- UPDATE in key order, between the slots and the rate limits (each CTE waits for the one
# -- before it through a scalar subquery on it, so the lock order is the one every trigger and
# -- writer takes: slot, budget, rate limit), and chosen admits a candidate only if, for each
# -- of its budgets, the costs of the candidates ahead of it and its own fit what is left. The
# -- start trigger jobs_debit_budget_reserve then reserves the cost under that lock. Fair turns
# -- need nothing here: they are the run_at order the scan already follows.
# -- Schema v10: a key's window is counted in `windows`, at clock_timestamp() read as it pulls
# -- each key's row from `limits`, that is once the row is locked, and the start trigger
# -- records the start at its own clock_timestamp(): never at now(), the statement's start,
# -- which a wait for the key's lock (another claim, a transaction holding the row) makes
# -- older than the start by the wait (1 start per 2 s, a 3 s wait: two starts 2 ms apart).
# -- The scan's `next_start_at > now()` keeps now(): an older clock there only skips a key
# -- that could start, for one claim.
# -- Schema v14: an adaptive key with a learnt rate is paced as well: `paced` admits a start
# -- once `paced_at` passed, and a second one if it passed a whole spacing ago (the slack the
# -- start trigger allows), at most what its window has room for. Schema v16: an adaptive
# -- key's window is 25 ms longer than its period (rate_limit_window_s).
CLAIM_JOBS = """
WITH candidates AS MATERIALIZED (
    SELECT c.*
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.*
        FROM pgqueue.claim_marks AS m
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit,
                   j.rate_limit_key, j.budget_keys, j.cost
            FROM pgqueue.jobs AS j
            WHERE j.state = 'queued' AND j.queue = m.queue AND j.priority = m.priority
              AND (j.run_at, j.id) >= (m.run_at, m.id) AND j.run_at <= now()
              AND j.kind = ANY ($5::text[])
              AND (j.concurrency_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.concurrency_slots AS s
                    WHERE s.key = j.concurrency_key AND s.running >= j.concurrency_limit))
              AND (j.rate_limit_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.rate_limits AS r
                    WHERE r.key = j.rate_limit_key
                      AND (r.next_start_at > now() OR r.paused_until > now()
                           OR r.breaker_until > now())))
              AND (j.budget_keys IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.budgets AS b
                    WHERE b.key = ANY (j.budget_keys)
                      AND b.reserved + j.cost
                          + CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                                 THEN b.spent ELSE 0 END > b.amount))
            ORDER BY j.run_at, j.id
            LIMIT $2
            FOR UPDATE OF j SKIP LOCKED
        ) AS j
        WHERE m.queue = q.name
        ORDER BY m.priority
        LIMIT $2
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pgqueue.paused_queues AS p WHERE p.queue = q.name)
), slots AS (
    SELECT s.key, s.running
    FROM pgqueue.concurrency_slots AS s
    WHERE s.key = ANY (ARRAY(SELECT concurrency_key FROM candidates))
    ORDER BY s.key
    FOR NO KEY UPDATE
), budgets AS (
    SELECT b.key,
           b.amount - b.reserved
           - CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                  THEN b.spent ELSE 0 END AS available
    FROM pgqueue.budgets AS b
    WHERE b.key = ANY (ARRAY(SELECT unnest(budget_keys) FROM candidates))
      AND (SELECT count(*) FROM slots) >= 0
    ORDER BY b.key
    FOR NO KEY UPDATE
), limits AS (
    SELECT r.key, r.capacity, r.paused_until, r.breaker_state, r.breaker_until, r.starts,
           r.period_s, r.adaptive, r.learnt, r.paced_at
    FROM pgqueue.rate_limits AS r
    WHERE r.key = ANY (ARRAY(SELECT rate_limit_key FROM candidates))
      AND (SELECT count(*) FROM budgets) >= 0
    ORDER BY r.key
    FOR NO KEY UPDATE
), windows AS (
    SELECT l.key, l.capacity, l.paused_until, l.breaker_state, l.breaker_until,
           (SELECT count(*) FROM unnest(l.starts) AS t
            WHERE t > clock_timestamp()
                      - make_interval(secs => pgqueue.rate_limit_window_s(l.period_s, l.adaptive))
           ) AS in_window,
           CASE WHEN NOT l.adaptive OR l.learnt IS NULL THEN 2147483647
                WHEN l.paced_at IS NULL THEN 2
                WHEN l.paced_at > clock_timestamp() THEN 0
                ELSE 1 + floor(least(extract(epoch FROM clock_timestamp() - l.paced_at),
                                     l.period_s / l.learnt) / (l.period_s / l.learnt))
           END AS paced
    FROM limits AS l
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
                       <= CASE WHEN l.paused_until > now() OR l.breaker_until > now() THEN 0
                               WHEN l.breaker_state <> 'closed'
                                   THEN least(1, coalesce(l.capacity - l.in_window, 1))
                               WHEN l.capacity IS NULL THEN 2147483647
                               ELSE least(l.capacity - l.in_window, l.paced) END)
               AND (c.budget_keys IS NULL OR NOT EXISTS (
                    SELECT 1 FROM budgets AS b
                    WHERE b.key = ANY (c.budget_keys)
                      AND (SELECT sum(o.cost) FROM candidates AS o
                           WHERE b.key = ANY (o.budget_keys)
                             AND (o.priority, o.run_at, o.id) <= (c.priority, c.run_at, c.id))
                          > b.available)) AS allowed
        FROM candidates AS c LEFT JOIN slots AS s ON s.key = c.concurrency_key
        LEFT JOIN windows AS l ON l.key = c.rate_limit_key
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

# -- complete_and_claim_jobs: COMPLETE_JOBS ($1, $2; with its attempts' rows) and CLAIM_JOBS
# -- ($3 queues, $4 limit, $5 worker, $6 lease seconds, $7 kinds) in one round trip, so a busy
# -- worker hands the slots of the jobs it finished straight to new ones. One row per claimed
# -- job (one row of NULLs when none was), the first of them carrying `completed_ids` (sent
# -- once, not once per row).
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
    SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL, last_error = NULL,
        result = ($2::jsonb -> j.id::text ->> 1)::jsonb,
        progress = coalesce(($2::jsonb -> j.id::text ->> 2)::jsonb, j.progress)
    WHERE j.id = ANY ($1::bigint[]) AND j.state = 'running'
      AND j.lease_token = ($2::jsonb -> j.id::text ->> 0)::bigint
    RETURNING j.id, j.concurrency_key, j.budget_keys, j.rate_limit_key,
              j.attempts, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO pgqueue.attempts (job_id, attempt, worker_id, started_at, outcome)
    SELECT id, attempts, worker_id, started_at, 'succeeded' FROM completed
    WHERE attempts > 1  -- a first attempt's success is its job row (LIST_ATTEMPTS)
), freed AS (
    SELECT concurrency_key AS key, count(*) AS n
    FROM completed WHERE concurrency_key IS NOT NULL
    GROUP BY concurrency_key
), candidates AS MATERIALIZED (
    SELECT c.*
    FROM unnest($3::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.*
        FROM pgqueue.claim_marks AS m
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.concurrency_limit,
                   j.rate_limit_key, j.budget_keys, j.cost
            FROM pgqueue.jobs AS j
            WHERE j.state = 'queued' AND j.queue = m.queue AND j.priority = m.priority
              AND (j.run_at, j.id) >= (m.run_at, m.id) AND j.run_at <= now()
              AND j.kind = ANY ($7::text[])
              AND (j.concurrency_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.concurrency_slots AS s
                    WHERE s.key = j.concurrency_key
                      AND s.running - coalesce((SELECT f.n FROM freed AS f WHERE f.key = s.key), 0)
                          >= j.concurrency_limit))
              AND (j.rate_limit_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.rate_limits AS r
                    WHERE r.key = j.rate_limit_key
                      AND (r.next_start_at > now() OR r.paused_until > now()
                           OR r.breaker_until > now())))
              AND (j.budget_keys IS NULL OR NOT EXISTS (
                    SELECT 1 FROM pgqueue.budgets AS b
                    WHERE b.key = ANY (j.budget_keys)
                      AND b.reserved + j.cost
                          + CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                                 THEN b.spent ELSE 0 END > b.amount))
            ORDER BY j.run_at, j.id
            LIMIT $4
            FOR UPDATE OF j SKIP LOCKED
        ) AS j
        WHERE m.queue = q.name
        ORDER BY m.priority
        LIMIT $4
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
), budgets AS (
    SELECT b.key,
           b.amount - b.reserved
           - CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                  THEN b.spent ELSE 0 END AS available
    FROM pgqueue.budgets AS b
    WHERE b.key = ANY (ARRAY(
        SELECT unnest(budget_keys) FROM candidates
        UNION ALL
        SELECT unnest(budget_keys) FROM completed))
      AND (SELECT count(*) FROM slots) >= 0
    ORDER BY b.key
    FOR NO KEY UPDATE
), limits AS (
    SELECT r.key, r.capacity, r.paused_until, r.breaker_state, r.breaker_until, r.starts,
           r.period_s, r.adaptive, r.learnt, r.paced_at
    FROM pgqueue.rate_limits AS r
    WHERE r.key = ANY (ARRAY(
        SELECT rate_limit_key FROM candidates
        UNION ALL
        SELECT rate_limit_key FROM completed))
      AND (SELECT count(*) FROM budgets) >= 0
    ORDER BY r.key
    FOR NO KEY UPDATE
), windows AS (
    SELECT l.key, l.capacity, l.paused_until, l.breaker_state, l.breaker_until,
           (SELECT count(*) FROM unnest(l.starts) AS t
            WHERE t > clock_timestamp()
                      - make_interval(secs => pgqueue.rate_limit_window_s(l.period_s, l.adaptive))
           ) AS in_window,
           CASE WHEN NOT l.adaptive OR l.learnt IS NULL THEN 2147483647
                WHEN l.paced_at IS NULL THEN 2
                WHEN l.paced_at > clock_timestamp() THEN 0
                ELSE 1 + floor(least(extract(epoch FROM clock_timestamp() - l.paced_at),
                                     l.period_s / l.learnt) / (l.period_s / l.learnt))
           END AS paced
    FROM limits AS l
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
                       <= CASE WHEN l.paused_until > now() OR l.breaker_until > now() THEN 0
                               WHEN l.breaker_state <> 'closed'
                                   THEN least(1, coalesce(l.capacity - l.in_window, 1))
                               WHEN l.capacity IS NULL THEN 2147483647
                               ELSE least(l.capacity - l.in_window, l.paced) END)
               AND (c.budget_keys IS NULL OR NOT EXISTS (
                    SELECT 1 FROM budgets AS b
                    WHERE b.key = ANY (c.budget_keys)
                      AND (SELECT sum(o.cost) FROM candidates AS o
                           WHERE b.key = ANY (o.budget_keys)
                             AND (o.priority, o.run_at, o.id) <= (c.priority, c.run_at, c.id))
                          > b.available)) AS allowed
        FROM candidates AS c
        LEFT JOIN slots AS s ON s.key = c.concurrency_key
        LEFT JOIN freed AS f ON f.key = c.concurrency_key
        LEFT JOIN windows AS l ON l.key = c.rate_limit_key
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

# -- When the first rate-limit key holding back runnable jobs of the queues $1 and kinds $2
# -- next allows a start, as a timestamp (NULL: none holds any back; $3 as below). Shared by
# -- the two lookups that follow.
_KEY_ALLOWS_AT = """
SELECT min(greatest(k.next_start_at, k.paused_until, k.breaker_until))
FROM (SELECT r.next_start_at, r.paused_until, r.breaker_until
      FROM pgqueue.rate_limits AS r
      WHERE EXISTS (
          SELECT 1 FROM pgqueue.jobs AS j
          WHERE j.rate_limit_key = r.key AND j.state = 'queued'
            AND j.queue = ANY ($1::text[]) AND j.kind = ANY ($2::text[])
            AND j.run_at <= now())
      ORDER BY r.key
      OFFSET 0  -- the time below is read from the locked row: not pushed down
      FOR SHARE OF r NOWAIT) AS k
WHERE greatest(k.next_start_at, k.paused_until, k.breaker_until)
      > now() - make_interval(secs => $3::float8)
"""

# -- seconds_until_due: how long until the next delayed job of the queues $1 and kinds $2
# -- becomes runnable, or a rate-limit key holding back runnable jobs of theirs allows a start
# -- again (its window frees a start, its throttle ends, its breaker lets a probe through), or
# -- the window of a budget that parks some of them ends, whichever comes first (NULL:
# -- nothing waits), so an idle worker wakes for it, not at a poll. A key that allowed a start
# -- again within the last $3 seconds (since the worker's last claim began) counts too, with
# -- a due time in the past: the claim found it closed, this lookup would find it open and,
# -- without it, the worker slept until its poll (up to 3 s of a paced key's starts lost).
# -- The keys' rows are read FOR SHARE NOWAIT: a claim still running on another connection
# -- may hold the jobs this worker's claim skipped (SKIP LOCKED) and the key's row, which a
# -- plain read sees open until that claim commits its start and closes it. Such a lookup
# -- fails (55P03) instead of reading it, and the store answers "due now": the next claim
# -- waits for that lock and sees the key as the other left it. (Read plainly, an idle worker
# -- of two slept until its poll with a paced job queued.) NOWAIT, not a wait: a lookup that
# -- held one key's lock while waiting for another's could deadlock with a writer taking them
# -- in another order.
# -- The keys are few (one per upstream), and each asks jobs_queued_rate_limit_key_idx for one
# -- held-back job; the budgets are those of the first hundred runnable budgeted jobs (an idle
# -- worker's queued runnable jobs are all held back by something, so these are the parked
# -- ones).
SECONDS_UNTIL_DUE = f"""
SELECT extract(epoch FROM least(
    (SELECT min(run_at)
     FROM pgqueue.jobs
     WHERE state = 'queued' AND queue = ANY ($1::text[]) AND kind = ANY ($2::text[])
       AND run_at > now()),
    ({_KEY_ALLOWS_AT}),
    (SELECT min(pgqueue.budget_window(b.period_s, now()) + make_interval(secs => b.period_s))
     FROM pgqueue.budgets AS b
     WHERE b.key IN (
         SELECT unnest(j.budget_keys)
         FROM (SELECT budget_keys FROM pgqueue.jobs
               WHERE state = 'queued' AND budget_keys IS NOT NULL
                 AND queue = ANY ($1::text[]) AND kind = ANY ($2::text[]) AND run_at <= now()
               LIMIT 100) AS j))
) - now())::float8
"""

# -- seconds_until_key_allows: SECONDS_UNTIL_DUE's second half alone: how long until a
# -- rate-limit key holding back runnable jobs of the queues $1 and kinds $2 allows a start
# -- again (NULL: none holds any back; $3 as there). A budgeted burst run (a drain) waits that
# -- long rather than end with work its budget could still do.
SECONDS_UNTIL_KEY_ALLOWS = f"SELECT extract(epoch FROM ({_KEY_ALLOWS_AT}) - now())::float8"
