"""Statements of rate limits of keys: set, remove, list."""

from __future__ import annotations

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

# -- list_rate_limits: every key with a limit, a throttle or a breaker, its starts in the
# -- current window and when it next allows one (NULL: now); an adaptive key's learnt rate and
# -- ceiling; the breaker's state, failures in a row and when it lets a probe through
LIST_RATE_LIMITS = """
SELECT r.key, r.capacity, r.period_s, r.paused_until,
       cardinality(ARRAY(SELECT t FROM unnest(r.starts) AS t
                         WHERE t > now() - make_interval(secs => r.period_s))) AS recent_starts,
       nullif(greatest(r.next_start_at, r.paused_until, r.breaker_until, now()), now())
           AS blocked_until,
       r.adaptive, r.ceiling, r.learnt,
       CASE WHEN r.breaker_threshold IS NULL THEN NULL ELSE r.breaker_state END AS breaker_state,
       r.breaker_threshold, r.breaker_window_s, r.breaker_open_s, r.breaker_failures,
       r.breaker_until
FROM pgqueue.rate_limits AS r
ORDER BY r.key
"""
