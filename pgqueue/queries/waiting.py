"""Statements that explain waiting jobs: why each has not started, and when it may be done."""

from __future__ import annotations

# -- explain_waits: for each job of ids $1 that exists, its state, what it was charged
# -- (`spent`), what its running attempt will be charged when it ends (`charging`: what the
# -- handler reported, else the job's cost, as charge_attempt() records it; NULL unless
# -- running), why it has not started yet (`reason`, NULL unless queued), when its next
# -- attempt may start (`next_attempt_at`, NULL when nothing says) and an estimate of the
# -- seconds until it is done (`done_in_s`).
# --
# -- The reasons are the claim's rules, read in the order the claim would trip on them, the
# -- first that holds winning (the VALUES list below, top to bottom): a paused queue; a retry
# -- waiting out its backoff; a job delayed on purpose (reason `queued`, due at run_at); the
# -- key's breaker open, or half open while its probe runs; the key's rate-limit window full
# -- or a throttle on it; a budget the job's cost does not fit in this window (spent in the
# -- current window + reserved + cost > amount: due when the window ends); its concurrency
# -- key at its limit; else plain `queued`, its turn not come.
# --
# -- The estimate is the queue's line divided by the queue's measured throughput:
# --   rate      jobs of the queue finished (any outcome: each frees a slot) in the dated
# --             counters of the last five minutes, over the seconds since the earliest of
# --             those minutes began (at least 1 s); NULL when none finished: no estimate;
# --   place     for a queued job, the queue's running jobs plus the queued jobs up to it in
# --             claim order (priority, run_at, id), itself included: the jobs that finish
# --             before it does, as the claim serves them (fair turns live in run_at, so the
# --             order is already the fair one); for a running job, its rank by start time;
# --   done_in_s = greatest(place / rate,
# --             key_place / (rate * least(1, concurrency_limit / running)): a key allowed L
# --             of the queue's `running` busy slots gets at most that share of its
# --             throughput, key_place being the key's running jobs plus its queued ones up to
# --             this one;
# --             seconds until next_attempt_at + running / rate: it cannot start before then,
# --             and an attempt takes about running / rate (Little's law)).
# -- NULL for a job of a paused queue (nobody knows when it resumes) and for one further in
# -- line than the $2 queued jobs read per queue (the read is one scan of the claim index,
# -- bounded: a status poll must stay cheap at any backlog); 0 for a finished job.
EXPLAIN_WAITS = """
WITH asked AS (
    SELECT j.id, j.queue, j.state, j.priority, j.run_at, j.attempts, j.started_at,
           j.concurrency_key, j.concurrency_limit, j.rate_limit_key, j.budget_keys, j.cost,
           j.spent, j.attempt_cost,
           -- Delayed: its run_at is ahead. A fair turn's run_at is a few microseconds ahead
           -- at most (schema v8), which is no delay a person would be told of.
           j.run_at > now() + CASE WHEN j.fairness_key IS NULL THEN interval '0'
                                   ELSE interval '1 second' END AS delayed
    FROM pgqueue.jobs AS j
    WHERE j.id = ANY ($1::bigint[])
),
queues AS (
    SELECT DISTINCT a.queue FROM asked AS a WHERE a.state IN ('queued', 'running')
),
line AS (
    SELECT l.id,
           row_number() OVER (PARTITION BY q.queue ORDER BY l.priority, l.run_at, l.id) AS place,
           count(*) OVER (PARTITION BY q.queue, l.concurrency_key
                          ORDER BY l.priority, l.run_at, l.id) AS key_place
    FROM queues AS q
    CROSS JOIN LATERAL (
        SELECT a.priority, a.run_at, a.id FROM asked AS a
        WHERE a.queue = q.queue AND a.state = 'queued'
        ORDER BY a.priority DESC, a.run_at DESC, a.id DESC
        LIMIT 1
    ) AS last
    -- The queue's line read from its head, as far as $2 jobs, and kept up to the last asked
    -- job: bounded by the LIMIT alone, because Postgres 15 ends no scan at a row comparison's
    -- bound on the index's later columns (it read a 200,000-job queue to its end to find 10
    -- jobs: 14 ms; reading 2,000 takes under 1 ms, and the whole statement, 100 jobs asked
    -- behind 200,000, 7 ms).
    CROSS JOIN LATERAL (
        SELECT h.* FROM (
            SELECT j.id, j.priority, j.run_at, j.concurrency_key
            FROM pgqueue.jobs AS j
            WHERE j.state = 'queued' AND j.queue = q.queue
            ORDER BY j.priority, j.run_at, j.id
            LIMIT $2
        ) AS h
        WHERE (h.priority, h.run_at, h.id) <= (last.priority, last.run_at, last.id)
    ) AS l
),
running AS (
    SELECT j.id, j.queue,
           row_number() OVER (PARTITION BY j.queue ORDER BY j.started_at, j.id) AS place,
           count(*) OVER (PARTITION BY j.queue) AS busy
    FROM pgqueue.jobs AS j
    WHERE j.state = 'running' AND j.lease_expires_at IS NOT NULL  -- the same rows, by index
      AND j.queue IN (SELECT q.queue FROM queues AS q)
),
queue_state AS (
    SELECT q.queue,
           coalesce((SELECT max(r.busy) FROM running AS r WHERE r.queue = q.queue), 0) AS busy,
           (SELECT sum(f.n)::float8
                   / greatest(extract(epoch FROM now() - min(f.minute))::float8, 1)
            FROM pgqueue.finished_counts AS f
            WHERE f.queue = q.queue
              AND f.minute >= date_trunc('minute', now()) - interval '4 minutes'
           ) AS rate
    FROM queues AS q
)
SELECT a.id, a.state::text AS state, a.spent,
       CASE WHEN a.state = 'running' THEN coalesce(a.attempt_cost, a.cost) END AS charging,
       w.reason, w.next_attempt_at,
       CASE
           WHEN a.state NOT IN ('queued', 'running') THEN 0
           WHEN qs.rate IS NULL OR qs.rate <= 0 THEN NULL
           WHEN a.state = 'running' THEN rn.place / qs.rate
           WHEN w.reason = 'queue_paused' OR l.place IS NULL THEN NULL
           ELSE greatest(
               (qs.busy + l.place) / qs.rate,
               CASE WHEN a.concurrency_limit IS NOT NULL THEN
                   (coalesce(s.running, 0) + l.key_place)
                   / (qs.rate * least(1, a.concurrency_limit::float8 / greatest(qs.busy, 1)))
               END,
               extract(epoch FROM w.next_attempt_at - now())::float8
               + greatest(qs.busy, 1) / qs.rate)
       END AS done_in_s
FROM asked AS a
LEFT JOIN queue_state AS qs ON qs.queue = a.queue
LEFT JOIN line AS l ON l.id = a.id
LEFT JOIN running AS rn ON rn.id = a.id
LEFT JOIN pgqueue.paused_queues AS p ON p.queue = a.queue
LEFT JOIN pgqueue.rate_limits AS r ON r.key = a.rate_limit_key
LEFT JOIN pgqueue.concurrency_slots AS s ON s.key = a.concurrency_key
LEFT JOIN LATERAL (
    SELECT max(pgqueue.budget_window(b.period_s, now()) + make_interval(secs => b.period_s))
           AS window_end
    FROM pgqueue.budgets AS b
    WHERE b.key = ANY (a.budget_keys)
      AND CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
               THEN b.spent ELSE 0 END + b.reserved + a.cost > b.amount
) AS b ON a.state = 'queued'
LEFT JOIN LATERAL (
    SELECT v.reason, v.next_attempt_at
    FROM (VALUES
        (1, p.queue IS NOT NULL, 'queue_paused', NULL::timestamptz),
        (2, a.delayed AND a.attempts > 0, 'retry_scheduled', a.run_at),
        (3, a.delayed, 'queued', a.run_at),
        (4, r.breaker_until > now() OR r.breaker_state = 'open', 'upstream_down',
            r.breaker_until),
        (5, r.next_start_at > now() OR r.paused_until > now(), 'rate_limit',
            greatest(r.next_start_at, r.paused_until)),
        (6, b.window_end IS NOT NULL, 'over_budget', b.window_end),
        (7, s.running >= a.concurrency_limit, 'concurrency', NULL),
        (8, true, 'queued', NULL)
    ) AS v(rank, holds, reason, next_attempt_at)
    WHERE v.holds
    ORDER BY v.rank
    LIMIT 1
) AS w ON a.state = 'queued'
ORDER BY a.id
"""
