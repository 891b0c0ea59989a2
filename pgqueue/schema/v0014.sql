-- pgqueue schema version 14: an adaptive key paces its starts and remembers where its
-- upstream's quota lies.
--
-- Measured against an upstream whose quota moves (8 calls/s, 3/s, 12/s; `make bench`,
-- `adaptive`), version 8's learning lost a third of the quota: its key burst a whole window
-- of starts at once, so a window one start too many drew a 429 for each start past the quota
-- and a Retry-After pause; the cut's estimate (the starts of that window) was a burst's size,
-- not the quota; and the climb back, a start per period above the rate last held, reached the
-- quota again within seconds, so the pause came back every few seconds. This version:
--
-- * paces an adaptive key's starts (once it has a rate): one every period / learnt, with one
--   start of slack (`paced_at`, the earliest time the next start may happen, one spacing
--   ahead of the last). A start past the quota then draws one 429, not a window's worth, and
--   the pause that follows stops the rest.
-- * learns the quota from the window that drew the 429 (`quota_seen`): its starts less the
--   429s it drew (every 429 of the cut's window refines it, `cut_starts`, `cut_throttles`;
--   none cuts again). The cut stays: half of what got the 429, or less.
-- * climbs back in three steps, each additive: within half a period to the rate last held a
--   whole period without a 429 (`sustained`); then, within one period, to 95% of the quota
--   seen; there it holds for five periods (`probe_after`). Past that it probes upwards, by
--   `probe_step` starts per period, doubling each period the upstream keeps accepting (a
--   quota that rose is found within a few periods; one that did not costs one 429 and one
--   pause per five periods).
-- * climbs only while the limit binds: a start that came within half a spacing of the time the
--   key allowed it (`bound_at`); an idle key keeps its rate.
-- Fixed limits are untouched.

-- migrate:up
ALTER TABLE pgqueue.rate_limits
    ADD COLUMN paced_at timestamptz,
    ADD COLUMN bound_at timestamptz,
    ADD COLUMN quota_seen float8,
    ADD COLUMN cut_starts integer,
    ADD COLUMN cut_throttles integer,
    ADD COLUMN good_since timestamptz,
    ADD COLUMN probe_after timestamptz,
    ADD COLUMN probe_step float8,
    ADD COLUMN probe_step_at timestamptz;
COMMENT ON COLUMN pgqueue.rate_limits.paced_at IS
    'adaptive key: the earliest time its next start may happen (one spacing, period / learnt, '
    'after the last; a start later than this banks one spacing of slack at most)';
COMMENT ON COLUMN pgqueue.rate_limits.quota_seen IS
    'adaptive key: starts per period its upstream accepted in the window that drew the last 429 '
    '(NULL: unknown, or forgotten once a probe climbed past it)';
COMMENT ON COLUMN pgqueue.rate_limits.probe_after IS
    'adaptive key: it holds below quota_seen until then, then probes upwards';

-- When a key next allows a start: its window's (full: when the oldest start leaves it) or its
-- pace's, whichever is later; NULL: now.
CREATE FUNCTION pgqueue.rate_limit_next_start(
    kept timestamptz[], cap integer, period float8, paced timestamptz
) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(
        CASE WHEN cardinality(kept) >= cap
             THEN kept[cardinality(kept) - cap + 1] + make_interval(secs => period) END,
        paced)
$$;

CREATE OR REPLACE FUNCTION pgqueue.rate_limit_started(job pgqueue.jobs) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kept timestamptz[];
    cap integer;
    period float8;
    horizon timestamptz;
    breaker text;
    learning boolean;
    rate float8;
    paced timestamptz;
    bound timestamptz;
    spacing interval;
    allowed timestamptz;
    started timestamptz;
BEGIN
    SELECT r.starts, r.capacity, r.period_s, r.breaker_state, r.adaptive, r.learnt, r.paced_at,
           r.bound_at, r.next_start_at
    INTO kept, cap, period, breaker, learning, rate, paced, bound, allowed
    FROM pgqueue.rate_limits AS r
    WHERE r.key = job.rate_limit_key
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- no limit, no breaker: nothing to count
    END IF;
    -- The start's time, read now that the key's row is locked (the claim locked it before
    -- this trigger ran, and the lock above is this transaction's own): not now(), which is
    -- when the claim's statement began, older than the start by any wait for a lock.
    started := clock_timestamp();
    IF breaker <> 'closed' THEN
        UPDATE pgqueue.rate_limits
        SET breaker_state = 'half_open',
            breaker_probe_job = job.id,
            breaker_until = greatest(job.lease_expires_at,
                                     started + make_interval(secs => coalesce(job.timeout_s, 0))),
            updated_at = now()
        WHERE key = job.rate_limit_key;
    END IF;
    IF cap IS NULL AND NOT learning THEN
        RETURN;
    END IF;
    -- Kept 50 ms past the window (throttle_rate_limit_key looks that far back); the window's
    -- counts filter by the period.
    horizon := started - make_interval(secs => period + 0.05);
    -- The array is oldest first, so only a stale head means there is anything to drop; the
    -- other starts of the same claim append without rereading the window.
    IF cardinality(kept) > 0 AND kept[1] <= horizon THEN
        kept := ARRAY(SELECT u.t FROM unnest(kept) WITH ORDINALITY AS u(t, n)
                      WHERE u.t > horizon ORDER BY u.n);
    END IF;
    -- Every start in the array was appended under this row's lock, which this transaction
    -- holds now, so each is older than `started`; greatest() keeps the array sorted even if
    -- the server's clock stepped back meanwhile.
    kept := kept || greatest(started, kept[cardinality(kept)]);
    IF learning AND rate IS NOT NULL THEN
        spacing := make_interval(secs => period / rate);
        -- Started within half a spacing of when the key allowed it (its pace or its window,
        -- whichever held it): work was waiting for the limit, the evidence that a higher rate
        -- would be used. A start the key did not hold back is no such evidence.
        IF allowed IS NOT NULL AND started < allowed + spacing / 2 THEN
            bound := started;
        END IF;
        -- One spacing of slack at most: a key that idled banks no burst.
        paced := greatest(paced, started - spacing) + spacing;
    END IF;
    UPDATE pgqueue.rate_limits
    SET starts = kept,
        next_start_at = pgqueue.rate_limit_next_start(kept, cap, period, paced),
        paced_at = paced,
        bound_at = bound,
        updated_at = now()
    WHERE key = job.rate_limit_key;
    RETURN;
END $$;

-- A job of a key succeeded: its upstream answered. The breaker closes (a probe's success) or
-- its count of failures in a row starts again; an adaptive key whose pace binds climbs (see
-- the header for the three steps). Each success adds step / learnt: a period of successes at
-- the pace adds `step` starts per period, additively.
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_succeeded(k text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    rate float8;
    held float8;
    since timestamptz;
    seen float8;
    step float8;
    step_at timestamptz;
    aim float8;
    period interval;
BEGIN
    -- Locked only when there is something to write: a breaker to close or its count to reset,
    -- or an adaptive rate whose limit binds. A success of any other key (a fixed limit, an
    -- idle adaptive one) takes no lock and writes nothing, as before this version.
    SELECT * INTO r FROM pgqueue.rate_limits AS t
    WHERE t.key = k
      AND (t.breaker_state <> 'closed' OR t.breaker_failures > 0
           OR (t.adaptive AND t.learnt IS NOT NULL
               AND t.bound_at >= now() - make_interval(secs => t.period_s)))
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.breaker_state <> 'closed' OR r.breaker_failures > 0 THEN
        UPDATE pgqueue.rate_limits
        SET breaker_state = 'closed',
            breaker_failures = 0,
            breaker_first_failure_at = NULL,
            breaker_trips = 0,
            breaker_until = NULL,
            updated_at = now()
        WHERE key = k;
    END IF;
    period := make_interval(secs => r.period_s);
    -- Only a pace that binds is evidence that more would be used: an idle key keeps its rate
    -- instead of drifting up to a level nobody tried.
    IF NOT r.adaptive OR r.learnt IS NULL OR r.bound_at IS NULL
       OR r.bound_at < now() - period THEN
        RETURN;
    END IF;
    rate := r.learnt;
    held := r.sustained;
    since := r.good_since;
    seen := r.quota_seen;
    step := coalesce(r.probe_step, 1);
    step_at := r.probe_step_at;
    -- A whole period at this rate since the last 429 (or since the rate was last marked held):
    -- the upstream sustains it.
    IF (since IS NULL OR since <= now() - period) AND rate > coalesce(held, 0) THEN
        held := rate;
        since := now();
    END IF;
    aim := seen * 0.95;
    IF rate < held THEN
        rate := least(held, rate + held / rate);
    ELSIF aim IS NOT NULL AND rate < aim THEN
        rate := least(aim, rate + greatest(0.2, aim - rate) / rate);
    ELSIF r.probe_after IS NOT NULL AND now() < r.probe_after THEN
        NULL;  -- hold just below the quota seen
    ELSE
        seen := NULL;  -- probing past it: the quota may have risen
        rate := rate + step / rate;
        IF step_at IS NULL OR step_at <= now() - period THEN
            step := least(step * 2, greatest(1, rate));
            step_at := now();
        END IF;
    END IF;
    rate := least(coalesce(r.ceiling, 10000), rate);
    UPDATE pgqueue.rate_limits
    SET learnt = rate,
        capacity = ceil(rate)::integer,
        next_start_at = pgqueue.rate_limit_next_start(starts, ceil(rate)::integer, period_s,
                                                      paced_at),
        sustained = held,
        good_since = since,
        quota_seen = seen,
        probe_step = step,
        probe_step_at = step_at,
        updated_at = now()
    WHERE key = k
      AND (learnt, sustained, good_since, quota_seen, probe_step, probe_step_at)
          IS DISTINCT FROM (rate, held, since, seen, step, step_at);
END $$;

-- A 429 (a handler's throttle) on key `k`: no job of it starts for `pause_s`; an adaptive key
-- learns from it. The first 429 of a period cuts its rate to half of what got it (its learnt
-- rate, or the starts of the window when fewer were made) and notes the quota seen (the
-- window's starts but this one); the next 429s of that period are the same signal, but each
-- says one more of the window's starts was refused: the quota seen, what it held and its rate
-- follow that down. It holds below the quota seen for five periods after the pause.
CREATE OR REPLACE FUNCTION pgqueue.throttle_rate_limit_key(k text, pause_s float8)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    tried integer;
    seen float8;
    cut float8;
BEGIN
    INSERT INTO pgqueue.rate_limits AS t (key, paused_until)
    VALUES (k, now() + make_interval(secs => pause_s))
    ON CONFLICT (key) DO UPDATE
    SET paused_until = greatest(t.paused_until, EXCLUDED.paused_until), updated_at = now()
    RETURNING * INTO r;
    IF NOT r.adaptive THEN
        RETURN;
    END IF;
    IF r.last_cut_at > now() - make_interval(secs => r.period_s) THEN
        seen := greatest(1, r.cut_starts - r.cut_throttles - 1);
        cut := greatest(1, least(r.learnt, seen / 2));
        UPDATE pgqueue.rate_limits
        SET cut_throttles = cut_throttles + 1,
            quota_seen = least(quota_seen, seen),
            sustained = CASE WHEN sustained IS NOT NULL THEN least(sustained, seen * 0.95) END,
            learnt = cut,
            capacity = ceil(cut)::integer,
            paced_at = greatest(paced_at, r.paused_until),
            next_start_at = pgqueue.rate_limit_next_start(
                starts, ceil(cut)::integer, period_s, greatest(paced_at, r.paused_until))
        WHERE key = k;
        RETURN;
    END IF;
    -- The starts of the window that drew the 429, the upstream's: ours are dated when claimed,
    -- a few milliseconds before the upstream sees them, so its window reaches a little further
    -- back than ours does now (up to 50 ms, or half a spacing when that is less: counting one
    -- start too many would aim past the quota).
    tried := greatest(1, (SELECT count(*) FROM unnest(r.starts) AS s
                          WHERE s > now() - make_interval(secs => r.period_s + least(
                              0.05, 0.5 * r.period_s / coalesce(r.learnt, 1e9)))));
    seen := greatest(1, least(tried - 1, coalesce(r.learnt, tried)));
    cut := greatest(1, least(coalesce(r.learnt, tried), tried) / 2);
    UPDATE pgqueue.rate_limits
    SET learnt = cut,
        capacity = ceil(cut)::integer,
        quota_seen = seen,
        sustained = CASE WHEN sustained IS NOT NULL THEN least(sustained, seen * 0.95) END,
        last_cut_at = now(),
        cut_starts = tried,
        cut_throttles = 1,
        good_since = r.paused_until,
        probe_after = r.paused_until + make_interval(secs => 5 * r.period_s),
        probe_step = 1,
        probe_step_at = r.paused_until,
        paced_at = greatest(paced_at, r.paused_until),
        next_start_at = pgqueue.rate_limit_next_start(
            starts, ceil(cut)::integer, period_s, greatest(paced_at, r.paused_until))
    WHERE key = k;
END $$;

-- migrate:down
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_started(job pgqueue.jobs) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kept timestamptz[];
    cap integer;
    period float8;
    horizon timestamptz;
    breaker text;
    learning boolean;
    started timestamptz;
BEGIN
    SELECT r.starts, r.capacity, r.period_s, r.breaker_state, r.adaptive
    INTO kept, cap, period, breaker, learning
    FROM pgqueue.rate_limits AS r
    WHERE r.key = job.rate_limit_key
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- no limit, no breaker: nothing to count
    END IF;
    -- The start's time, read now that the key's row is locked (the claim locked it before
    -- this trigger ran, and the lock above is this transaction's own): not now(), which is
    -- when the claim's statement began, older than the start by any wait for a lock.
    started := clock_timestamp();
    IF breaker <> 'closed' THEN
        UPDATE pgqueue.rate_limits
        SET breaker_state = 'half_open',
            breaker_probe_job = job.id,
            breaker_until = greatest(job.lease_expires_at,
                                     started + make_interval(secs => coalesce(job.timeout_s, 0))),
            updated_at = now()
        WHERE key = job.rate_limit_key;
    END IF;
    IF cap IS NULL AND NOT learning THEN
        RETURN;
    END IF;
    horizon := started - make_interval(secs => period);
    -- The array is oldest first, so only a stale head means there is anything to drop; the
    -- other starts of the same claim append without rereading the window.
    IF cardinality(kept) > 0 AND kept[1] <= horizon THEN
        kept := ARRAY(SELECT u.t FROM unnest(kept) WITH ORDINALITY AS u(t, n)
                      WHERE u.t > horizon ORDER BY u.n);
    END IF;
    -- Every start in the array was appended under this row's lock, which this transaction
    -- holds now, so each is older than `started`; greatest() keeps the array sorted even if
    -- the server's clock stepped back meanwhile.
    kept := kept || greatest(started, kept[cardinality(kept)]);
    UPDATE pgqueue.rate_limits
    SET starts = kept,
        next_start_at = CASE WHEN cardinality(kept) >= cap
                             THEN kept[cardinality(kept) - cap + 1]
                                  + make_interval(secs => period) END,
        updated_at = now()
    WHERE key = job.rate_limit_key;
    RETURN;
END $$;

CREATE OR REPLACE FUNCTION pgqueue.rate_limit_succeeded(k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pgqueue.rate_limits AS r
    SET breaker_state = 'closed',
        breaker_failures = 0,
        breaker_first_failure_at = NULL,
        breaker_trips = 0,
        breaker_until = NULL,
        learnt = CASE
            WHEN NOT r.adaptive OR r.capacity IS NULL OR r.learnt IS NULL THEN r.learnt
            -- Only a limit that binds is evidence that more would be used: an idle key keeps
            -- its rate instead of drifting up to a level nobody tried.
            WHEN r.next_start_at IS NULL OR r.next_start_at < now() - make_interval(secs => r.period_s)
                THEN r.learnt
            -- One start per window of successes (additive: TCP's congestion avoidance), two
            -- below what it last sustained, to win a cut back sooner. (A whole start per
            -- success there, a slow start back, overshot: measured 20% 429s against 9.5%.)
            WHEN r.learnt < coalesce(r.sustained, 0)
                THEN least(coalesce(r.ceiling, 10000), r.learnt + 2 / greatest(r.learnt, 1))
            ELSE least(coalesce(r.ceiling, 10000), r.learnt + 1 / greatest(r.learnt, 1)) END,
        updated_at = now()
    WHERE r.key = k
      AND (r.breaker_state <> 'closed' OR r.breaker_failures > 0
           OR (r.adaptive AND r.capacity IS NOT NULL AND r.learnt IS NOT NULL
               AND (r.ceiling IS NULL OR r.learnt < r.ceiling)));
    -- capacity follows learnt, and a raised capacity may free the window at once.
    UPDATE pgqueue.rate_limits AS r
    SET capacity = floor(r.learnt)::integer,
        next_start_at = CASE WHEN cardinality(r.starts) >= floor(r.learnt)
                             THEN r.starts[cardinality(r.starts) - floor(r.learnt)::integer + 1]
                                  + make_interval(secs => r.period_s) END
    WHERE r.key = k AND r.adaptive AND r.learnt IS NOT NULL
      AND r.capacity IS DISTINCT FROM floor(r.learnt)::integer;
END $$;

CREATE OR REPLACE FUNCTION pgqueue.throttle_rate_limit_key(k text, pause_s float8) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    tried float8;
    cut float8;
BEGIN
    INSERT INTO pgqueue.rate_limits AS t (key, paused_until)
    VALUES (k, now() + make_interval(secs => pause_s))
    ON CONFLICT (key) DO UPDATE
    SET paused_until = greatest(t.paused_until, EXCLUDED.paused_until), updated_at = now()
    RETURNING * INTO r;
    IF NOT r.adaptive
       OR r.last_cut_at > now() - make_interval(secs => r.period_s) THEN
        RETURN;
    END IF;
    tried := greatest(1, (SELECT count(*) FROM unnest(r.starts) AS s
                          WHERE s > now() - make_interval(secs => r.period_s)));
    tried := least(coalesce(r.learnt, tried), tried);
    cut := greatest(1, floor(tried / 2));
    UPDATE pgqueue.rate_limits
    SET learnt = cut,
        sustained = greatest(1, tried - 1),
        last_cut_at = now(),
        capacity = cut::integer,
        next_start_at = CASE WHEN cardinality(r.starts) >= cut
                             THEN r.starts[cardinality(r.starts) - cut::integer + 1]
                                  + make_interval(secs => r.period_s) END
    WHERE key = k;
END $$;

DROP FUNCTION pgqueue.rate_limit_next_start(timestamptz[], integer, float8, timestamptz);
ALTER TABLE pgqueue.rate_limits
    DROP COLUMN probe_step_at, DROP COLUMN probe_step, DROP COLUMN probe_after,
    DROP COLUMN good_since, DROP COLUMN cut_throttles, DROP COLUMN cut_starts,
    DROP COLUMN quota_seen, DROP COLUMN bound_at, DROP COLUMN paced_at;
