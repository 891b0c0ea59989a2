"""Statements of the governor: breakers, budgets, an attempt's reported cost (schema v8)."""

from __future__ import annotations

# -- set_breaker: key $1's breaker opens after $2 transient upstream failures in a row within
# -- $3 seconds, for $4 seconds (then one probe). Its state (open or not, the count) stays:
# -- every worker sets it as it starts, and a restart must not close an open breaker.
SET_BREAKER = """
INSERT INTO pgqueue.rate_limits AS r (key, breaker_threshold, breaker_window_s, breaker_open_s)
VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE
SET breaker_threshold = EXCLUDED.breaker_threshold,
    breaker_window_s = EXCLUDED.breaker_window_s,
    breaker_open_s = EXCLUDED.breaker_open_s,
    updated_at = now()
"""

# -- remove_breaker: key $1 has no breaker; its jobs held by an open one start again
REMOVE_BREAKER = """
UPDATE pgqueue.rate_limits
SET breaker_threshold = NULL, breaker_window_s = NULL, breaker_open_s = NULL,
    breaker_state = 'closed', breaker_failures = 0, breaker_first_failure_at = NULL,
    breaker_trips = 0, breaker_until = NULL, breaker_probe_job = NULL, updated_at = now()
WHERE key = $1
"""

# -- set_adaptive_rate: key $1's start rate is learnt over windows of $3 seconds, never above
# -- $2 starts a window (NULL: no ceiling). A rate already learnt under the same ceiling and
# -- window stays (every worker sets this as it starts); a new ceiling or window starts the
# -- learning anew, from the ceiling (none: from rate_limit_first_pace(), schema v16).
SET_ADAPTIVE_RATE = """
INSERT INTO pgqueue.rate_limits AS r (key, capacity, period_s, adaptive, ceiling, learnt)
VALUES ($1, coalesce($2::integer, ceil(pgqueue.rate_limit_first_pace())::integer), $3::float8,
        true, $2::integer, coalesce($2::float8, pgqueue.rate_limit_first_pace()))
ON CONFLICT (key) DO UPDATE
SET adaptive = true,
    ceiling = EXCLUDED.ceiling,
    period_s = EXCLUDED.period_s,
    learnt = CASE WHEN r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                       AND r.period_s = EXCLUDED.period_s
                  THEN r.learnt ELSE EXCLUDED.learnt END,
    capacity = CASE WHEN r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                         AND r.period_s = EXCLUDED.period_s
                    THEN r.capacity ELSE EXCLUDED.capacity END,
    sustained = CASE WHEN r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                          AND r.period_s = EXCLUDED.period_s
                     THEN r.sustained END,
    next_start_at = CASE WHEN r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                              AND r.period_s = EXCLUDED.period_s
                         THEN r.next_start_at END,
    -- What the learning knew of the upstream (schema v14) stays with the rate it learnt, and
    -- goes with it (a sub-SELECT that yields no row sets NULLs).
    (paced_at, bound_at, quota_seen, cut_starts, cut_throttles, good_since, probe_after,
     probe_step, probe_step_at, probe_from, refused_at)
        = (SELECT r.paced_at, r.bound_at, r.quota_seen, r.cut_starts, r.cut_throttles,
                  r.good_since, r.probe_after, r.probe_step, r.probe_step_at, r.probe_from,
                  r.refused_at
           WHERE r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                 AND r.period_s = EXCLUDED.period_s),
    probe_refusals = CASE WHEN r.adaptive AND r.ceiling IS NOT DISTINCT FROM EXCLUDED.ceiling
                               AND r.period_s = EXCLUDED.period_s
                          THEN r.probe_refusals ELSE 0 END,
    updated_at = now()
"""

# -- clear_adaptive: key $1's rate is no longer learnt (SET_RATE_LIMIT or REMOVE_RATE_LIMIT
# -- follows in the same transaction and sets what the claim obeys)
CLEAR_ADAPTIVE = """
UPDATE pgqueue.rate_limits
SET adaptive = false, ceiling = NULL, learnt = NULL, sustained = NULL, last_cut_at = NULL,
    paced_at = NULL, bound_at = NULL, quota_seen = NULL, cut_starts = NULL,
    cut_throttles = NULL, good_since = NULL, probe_after = NULL, probe_step = NULL,
    probe_step_at = NULL, probe_from = NULL, probe_refusals = 0, refused_at = NULL
WHERE key = $1 AND adaptive
"""

# -- set_budget: key $1 may spend $2 per window of $3 seconds (aligned to the epoch: 86400 is
# -- a UTC day); what it spent in the current window counts against the new amount. The
# -- queues whose jobs it parks are woken (a raised budget starts them at once).
SET_BUDGET = """
WITH set AS (
    INSERT INTO pgqueue.budgets AS b (key, amount, period_s) VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE
    SET amount = EXCLUDED.amount,
        period_s = EXCLUDED.period_s,
        spent = CASE WHEN b.period_s = EXCLUDED.period_s THEN b.spent ELSE 0 END,
        window_start = CASE WHEN b.period_s = EXCLUDED.period_s
                            THEN b.window_start ELSE '-infinity' END,
        updated_at = now()
    RETURNING b.key
)
SELECT count(pg_notify('pgqueue_jobs', q.queue))
FROM (SELECT DISTINCT queue FROM pgqueue.jobs
      WHERE budget_keys @> ARRAY[$1::text] AND state = 'queued' AND budget_keys IS NOT NULL)
     AS q, set
"""

# -- remove_budget: key $1 has no budget any more; the queues of the jobs it parked are woken
REMOVE_BUDGET = """
WITH removed AS (DELETE FROM pgqueue.budgets WHERE key = $1 RETURNING key)
SELECT count(pg_notify('pgqueue_jobs', q.queue))
FROM (SELECT DISTINCT queue FROM pgqueue.jobs
      WHERE budget_keys @> ARRAY[$1::text] AND state = 'queued' AND budget_keys IS NOT NULL)
     AS q, removed
"""

# -- list_budgets: the budgets $1 (NULL: all), with what is spent in the current window, what
# -- running attempts hold, what is left and when the window ends
LIST_BUDGETS = """
SELECT b.key, b.amount, b.period_s,
       CASE WHEN b.window_start = w.start THEN b.spent ELSE 0 END AS spent,
       b.reserved,
       greatest(0, b.amount - b.reserved
                   - CASE WHEN b.window_start = w.start THEN b.spent ELSE 0 END) AS available,
       w.start + make_interval(secs => b.period_s) AS window_ends_at
FROM pgqueue.budgets AS b
CROSS JOIN LATERAL (SELECT pgqueue.budget_window(b.period_s, now()) AS start) AS w
WHERE $1::text[] IS NULL OR b.key = ANY ($1::text[])
ORDER BY b.key
"""

# -- charge_attempt: fenced; the running attempt of job $1 (lease $2) spent $3 (what its
# -- budgets are charged when it ends, instead of the whole cost)
CHARGE_ATTEMPT = """
UPDATE pgqueue.jobs SET attempt_cost = $3
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING id
"""
