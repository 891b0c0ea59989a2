-- pgqueue schema version 17: a quota that rose is climbed by doubling; a refused start gives
-- its place in the pace back.
--
-- Measured against an upstream whose quota moves (8 calls/s, 3/s, 12/s, a sliding second,
-- `Retry-After: 1`; `make bench`, `adaptive`), version 16 kept 0.83-0.91x of the quota with
-- 4.6-5.7% of its calls 429s:
-- * A probe whose half period found the upstream took more than the quota the key knew
--   climbed on with a step growing fourfold per half period from one start: from 3 to 12 a
--   second took two periods after the quota rose. It now jumps to twice what the upstream
--   took and doubles each half period, until the refusal that ends every probe (one 429, no
--   pause): within a period or so.
-- * A refused start kept the place it took in the pace: at 3 calls a second a refusal lost a
--   third of a second, nearly a start per refusal.
-- Measured the same way, alone, this version keeps 0.90-0.93x of the quota with 4.5-5.1% of
-- its calls 429s.

-- migrate:up
-- As in version 16: a success climbs an adaptive key whose pace binds, within half a period
-- back to the rate it last held a whole period, then within a period to 97% of the quota it
-- measured, where it holds (`probe_after`); past that it probes, `probe_step` starts per
-- period above where it was, the step growing fourfold each half period the upstream refuses
-- none of it. New: once the upstream took more than the quota the key knew, that count is the
-- quota measured, the rate jumps to twice it and the step doubles the rate each half period.
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_succeeded(k text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    rate float8;
    held float8;
    since timestamptz;
    seen float8;
    took float8;
    step float8;
    step_at timestamptz;
    probing float8;
    refusals integer;
    aim float8;
    period interval;
BEGIN
    -- Locked only when there is something to write: a breaker to close or its count to reset,
    -- or an adaptive rate whose limit binds. A success of any other key (a fixed limit, an
    -- idle adaptive one) takes no lock and writes nothing.
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
    probing := r.probe_from;
    refusals := r.probe_refusals;
    -- A whole period at this rate since the last 429 (or since the rate was last marked held):
    -- the upstream sustains it.
    IF (since IS NULL OR since <= now() - period) AND rate > coalesce(held, 0) THEN
        held := rate;
        since := now();
    END IF;
    aim := seen * pgqueue.rate_limit_aim();
    IF rate < held THEN
        rate := least(held, rate + held / rate);
    ELSIF aim IS NOT NULL AND rate < aim THEN
        rate := least(aim, rate + aim / rate);
    ELSIF r.probe_after IS NOT NULL AND now() < r.probe_after THEN
        NULL;  -- hold just below the quota measured
    ELSE
        IF probing IS NULL THEN
            probing := rate;  -- a probe begins: a 429 from here on is its refusal
            step := 1;
            step_at := now();
        END IF;
        rate := rate + step / rate;
        IF step_at IS NULL OR step_at <= now() - period / 2 THEN
            -- Half a period of this step and no refusal: the upstream took every start of its
            -- last window.
            took := (SELECT count(*) FROM unnest(r.starts) AS s WHERE s > now() - period);
            IF took > coalesce(seen, 0) THEN
                -- The upstream took more than the quota the key knew: it rose, by how much
                -- nobody knows yet. Twice what it took, and the step that doubles the rate
                -- each half period, find it within a period or two; overshooting it costs a
                -- refusal (a 429, no pause), the way every probe ends.
                seen := took;
                refusals := 0;
                rate := greatest(rate, 2 * took);
                step := greatest(1, 2 * rate);
            ELSE
                step := least(step * 4, greatest(1, 2 * rate));
            END IF;
            step_at := now();
        END IF;
    END IF;
    rate := least(coalesce(r.ceiling, 10000), rate);
    UPDATE pgqueue.rate_limits
    SET learnt = rate,
        capacity = ceil(rate)::integer,
        next_start_at = pgqueue.rate_limit_next_start(
            starts, ceil(rate)::integer, pgqueue.rate_limit_window_s(period_s, true), paced_at),
        sustained = held,
        good_since = since,
        quota_seen = seen,
        probe_step = step,
        probe_step_at = step_at,
        probe_from = probing,
        probe_refusals = refusals,
        updated_at = now()
    WHERE key = k
      AND (learnt, sustained, good_since, quota_seen, probe_step, probe_step_at, probe_from,
           probe_refusals)
          IS DISTINCT FROM (rate, held, since, seen, step, step_at, probing, refusals);
END $$;

-- As in version 16 (read its header), but a refused start gives back its place in the pace.
CREATE OR REPLACE FUNCTION pgqueue.throttle_rate_limit_key(
    k text, pause_s float8, started timestamptz
)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    tried integer;
    seen float8;
    cut float8;
    back float8;
    paced timestamptz;
    kept timestamptz[];  -- the window's starts but the last: one refused start leaves it
BEGIN
    SELECT * INTO r FROM pgqueue.rate_limits AS t WHERE t.key = k FOR NO KEY UPDATE;
    kept := r.starts[1:cardinality(r.starts) - 1];
    IF FOUND AND r.adaptive AND r.refused_at > now() - make_interval(secs => r.period_s)
       AND started < r.refused_at THEN
        UPDATE pgqueue.rate_limits
        SET starts = kept,
            next_start_at = pgqueue.rate_limit_next_start(
                kept, capacity,
                pgqueue.rate_limit_window_s(period_s, true), paced_at),
            updated_at = now()
        WHERE key = k;
        RETURN;
    END IF;
    IF FOUND AND r.adaptive AND r.learnt IS NOT NULL THEN
        -- The starts of the window that drew the 429, the upstream's: ours are dated when
        -- claimed, some milliseconds before the upstream sees them (tens, on a busy worker),
        -- so its window reaches further back than ours does now: up to 100 ms, or a spacing
        -- when that is less. Only to tell a refusal from a cut: taking a refusal for a cut
        -- costs a pause, the other way round one more 429.
        tried := (SELECT count(*) FROM unnest(r.starts) AS s
                  WHERE s > now() - make_interval(secs => r.period_s + least(
                      0.1, r.period_s / r.learnt)));
    END IF;
    -- A refusal: the key probes past the quota it measured, or its window holds more starts
    -- than that quota (its pace keeps 3% below it, but the upstream dates calls when they
    -- arrive, and their few milliseconds vary: one more than the quota lands in its window now
    -- and then). Either way the quota stands, and a refusal within the period before (or a
    -- cut) means it does not: then this is a cut. So is a key's first 429 ever: the quota it
    -- knows before one is what its climb saw accepted, not a quota met.
    IF FOUND AND r.adaptive AND r.quota_seen IS NOT NULL AND r.learnt IS NOT NULL
       AND r.last_cut_at IS NOT NULL
       AND (r.probe_from IS NOT NULL OR tried > r.quota_seen)
       AND (r.last_cut_at > now() - make_interval(secs => r.period_s)) IS NOT TRUE
       AND (r.refused_at > now() - make_interval(secs => r.period_s)) IS NOT TRUE THEN
        -- The upstream's window was full when the refused call reached it: what it held is the
        -- quota, the starts of its window before that call (when its start is known; else
        -- our window's but the refused one). Not the starts after it: a probe climbing fast
        -- has a few more on their way, and counting them aimed past the quota (a second 429,
        -- a cut and a pause). The refused start leaves our window as it never entered theirs.
        seen := greatest(r.quota_seen, CASE WHEN started IS NULL THEN tried - 1 ELSE
            (SELECT count(*) FROM unnest(r.starts) AS s
             WHERE s < started AND s > started - make_interval(secs => r.period_s + least(
                 0.05, 0.5 * r.period_s / r.learnt))) END);
        back := greatest(1, least(r.learnt, seen * pgqueue.rate_limit_aim()));
        -- The next start waits until the upstream's window surely has room: until the start
        -- whose leaving frees a place in it is 50 ms more than a period old (its clock runs
        -- those few milliseconds behind ours). A start the moment ours had room was refused
        -- again now and then, and a second refusal is a cut (measured: a pause a minute).
        -- The refused start gives back the spacing it took of the pace: at a low rate that
        -- spacing is a third of a second, a start lost per refusal (measured: 8% of a 3/s
        -- quota).
        paced := greatest(r.paced_at - make_interval(secs => r.period_s / r.learnt),
                          clock_timestamp(),
                          kept[cardinality(r.starts) - ceil(back)::integer]
                          + make_interval(secs => r.period_s + 0.05));
        UPDATE pgqueue.rate_limits
        SET learnt = back,
            capacity = ceil(back)::integer,
            quota_seen = seen,
            sustained = least(sustained, back),
            probe_from = NULL,
            probe_refusals = probe_refusals + 1,
            refused_at = now(),
            probe_after = now()
                          + make_interval(secs => r.period_s * least(3, 1 + r.probe_refusals)),
            probe_step = 1,
            probe_step_at = NULL,
            starts = kept,
            paced_at = paced,
            next_start_at = pgqueue.rate_limit_next_start(
                kept, ceil(back)::integer,
                pgqueue.rate_limit_window_s(period_s, true), paced),
            updated_at = now()
        WHERE key = k;
        RETURN;
    END IF;
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
            sustained = CASE WHEN sustained IS NOT NULL
                             THEN least(sustained, seen * pgqueue.rate_limit_aim()) END,
            learnt = cut,
            capacity = ceil(cut)::integer,
            paced_at = greatest(paced_at, r.paused_until),
            next_start_at = pgqueue.rate_limit_next_start(
                starts, ceil(cut)::integer, pgqueue.rate_limit_window_s(period_s, true),
                greatest(paced_at, r.paused_until))
        WHERE key = k;
        RETURN;
    END IF;
    -- The starts of the window that drew the 429, the upstream's: ours are dated when claimed,
    -- a few milliseconds before the upstream sees them, so its window reaches a little further
    -- back than ours does now (up to 50 ms, or half a spacing when that is less: counting one
    -- start too many would aim past the quota).
    tried := greatest(1, (SELECT count(*) FROM unnest(r.starts) AS s
                          WHERE s > now() - make_interval(secs => r.period_s + least(
                              0.05, 0.5 * r.period_s / r.learnt))));
    seen := greatest(1, least(tried - 1, coalesce(r.learnt, tried)));
    cut := greatest(1, least(coalesce(r.learnt, tried), tried) / 2);
    UPDATE pgqueue.rate_limits
    SET learnt = cut,
        capacity = ceil(cut)::integer,
        quota_seen = seen,
        sustained = CASE WHEN sustained IS NOT NULL
                         THEN least(sustained, seen * pgqueue.rate_limit_aim()) END,
        last_cut_at = now(),
        cut_starts = tried,
        cut_throttles = 1,
        good_since = r.paused_until,
        probe_after = r.paused_until + make_interval(secs => 2 * r.period_s),
        probe_step = 1,
        probe_step_at = r.paused_until,
        probe_from = NULL,
        probe_refusals = 0,
        paced_at = greatest(paced_at, r.paused_until),
        next_start_at = pgqueue.rate_limit_next_start(
            starts, ceil(cut)::integer, pgqueue.rate_limit_window_s(period_s, true),
            greatest(paced_at, r.paused_until))
    WHERE key = k;
END $$;

-- migrate:down
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_succeeded(k text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    rate float8;
    held float8;
    since timestamptz;
    seen float8;
    took float8;
    step float8;
    step_at timestamptz;
    probing float8;
    refusals integer;
    aim float8;
    period interval;
BEGIN
    -- Locked only when there is something to write: a breaker to close or its count to reset,
    -- or an adaptive rate whose limit binds. A success of any other key (a fixed limit, an
    -- idle adaptive one) takes no lock and writes nothing.
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
    probing := r.probe_from;
    refusals := r.probe_refusals;
    -- A whole period at this rate since the last 429 (or since the rate was last marked held):
    -- the upstream sustains it.
    IF (since IS NULL OR since <= now() - period) AND rate > coalesce(held, 0) THEN
        held := rate;
        since := now();
    END IF;
    aim := seen * pgqueue.rate_limit_aim();
    IF rate < held THEN
        rate := least(held, rate + held / rate);
    ELSIF aim IS NOT NULL AND rate < aim THEN
        rate := least(aim, rate + aim / rate);
    ELSIF r.probe_after IS NOT NULL AND now() < r.probe_after THEN
        NULL;  -- hold just below the quota measured
    ELSE
        IF probing IS NULL THEN
            probing := rate;  -- a probe begins: a 429 from here on is its refusal
            step := 1;
            step_at := now();
        END IF;
        rate := rate + step / rate;
        IF step_at IS NULL OR step_at <= now() - period / 2 THEN
            -- Half a period of this step and no refusal: the upstream took every start of its
            -- last window.
            took := (SELECT count(*) FROM unnest(r.starts) AS s WHERE s > now() - period);
            IF took > coalesce(seen, 0) THEN
                seen := took;
                refusals := 0;
            END IF;
            step := least(step * 4, greatest(1, 2 * rate));
            step_at := now();
        END IF;
    END IF;
    rate := least(coalesce(r.ceiling, 10000), rate);
    UPDATE pgqueue.rate_limits
    SET learnt = rate,
        capacity = ceil(rate)::integer,
        next_start_at = pgqueue.rate_limit_next_start(
            starts, ceil(rate)::integer, pgqueue.rate_limit_window_s(period_s, true), paced_at),
        sustained = held,
        good_since = since,
        quota_seen = seen,
        probe_step = step,
        probe_step_at = step_at,
        probe_from = probing,
        probe_refusals = refusals,
        updated_at = now()
    WHERE key = k
      AND (learnt, sustained, good_since, quota_seen, probe_step, probe_step_at, probe_from,
           probe_refusals)
          IS DISTINCT FROM (rate, held, since, seen, step, step_at, probing, refusals);
END $$;

CREATE OR REPLACE FUNCTION pgqueue.throttle_rate_limit_key(
    k text, pause_s float8, started timestamptz
)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
    tried integer;
    seen float8;
    cut float8;
    back float8;
    paced timestamptz;
    kept timestamptz[];  -- the window's starts but the last: one refused start leaves it
BEGIN
    SELECT * INTO r FROM pgqueue.rate_limits AS t WHERE t.key = k FOR NO KEY UPDATE;
    kept := r.starts[1:cardinality(r.starts) - 1];
    IF FOUND AND r.adaptive AND r.refused_at > now() - make_interval(secs => r.period_s)
       AND started < r.refused_at THEN
        UPDATE pgqueue.rate_limits
        SET starts = kept,
            next_start_at = pgqueue.rate_limit_next_start(
                kept, capacity,
                pgqueue.rate_limit_window_s(period_s, true), paced_at),
            updated_at = now()
        WHERE key = k;
        RETURN;
    END IF;
    IF FOUND AND r.adaptive AND r.learnt IS NOT NULL THEN
        -- The starts of the window that drew the 429, the upstream's: ours are dated when
        -- claimed, some milliseconds before the upstream sees them (tens, on a busy worker),
        -- so its window reaches further back than ours does now: up to 100 ms, or a spacing
        -- when that is less. Only to tell a refusal from a cut: taking a refusal for a cut
        -- costs a pause, the other way round one more 429.
        tried := (SELECT count(*) FROM unnest(r.starts) AS s
                  WHERE s > now() - make_interval(secs => r.period_s + least(
                      0.1, r.period_s / r.learnt)));
    END IF;
    -- A refusal: the key probes past the quota it measured, or its window holds more starts
    -- than that quota (its pace keeps 3% below it, but the upstream dates calls when they
    -- arrive, and their few milliseconds vary: one more than the quota lands in its window now
    -- and then). Either way the quota stands, and a refusal within the period before (or a
    -- cut) means it does not: then this is a cut. So is a key's first 429 ever: the quota it
    -- knows before one is what its climb saw accepted, not a quota met.
    IF FOUND AND r.adaptive AND r.quota_seen IS NOT NULL AND r.learnt IS NOT NULL
       AND r.last_cut_at IS NOT NULL
       AND (r.probe_from IS NOT NULL OR tried > r.quota_seen)
       AND (r.last_cut_at > now() - make_interval(secs => r.period_s)) IS NOT TRUE
       AND (r.refused_at > now() - make_interval(secs => r.period_s)) IS NOT TRUE THEN
        -- The upstream's window was full when the refused call reached it: what it held is the
        -- quota, the starts of its window before that call (when its start is known; else
        -- our window's but the refused one). Not the starts after it: a probe climbing fast
        -- has a few more on their way, and counting them aimed past the quota (a second 429,
        -- a cut and a pause). The refused start leaves our window as it never entered theirs.
        seen := greatest(r.quota_seen, CASE WHEN started IS NULL THEN tried - 1 ELSE
            (SELECT count(*) FROM unnest(r.starts) AS s
             WHERE s < started AND s > started - make_interval(secs => r.period_s + least(
                 0.05, 0.5 * r.period_s / r.learnt))) END);
        back := greatest(1, least(r.learnt, seen * pgqueue.rate_limit_aim()));
        -- The next start waits until the upstream's window surely has room: until the start
        -- whose leaving frees a place in it is 50 ms more than a period old (its clock runs
        -- those few milliseconds behind ours). A start the moment ours had room was refused
        -- again now and then, and a second refusal is a cut (measured: a pause a minute).
        paced := greatest(r.paced_at, clock_timestamp(),
                          kept[cardinality(r.starts) - ceil(back)::integer]
                          + make_interval(secs => r.period_s + 0.05));
        UPDATE pgqueue.rate_limits
        SET learnt = back,
            capacity = ceil(back)::integer,
            quota_seen = seen,
            sustained = least(sustained, back),
            probe_from = NULL,
            probe_refusals = probe_refusals + 1,
            refused_at = now(),
            probe_after = now()
                          + make_interval(secs => r.period_s * least(3, 1 + r.probe_refusals)),
            probe_step = 1,
            probe_step_at = NULL,
            starts = kept,
            paced_at = paced,
            next_start_at = pgqueue.rate_limit_next_start(
                kept, ceil(back)::integer,
                pgqueue.rate_limit_window_s(period_s, true), paced),
            updated_at = now()
        WHERE key = k;
        RETURN;
    END IF;
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
            sustained = CASE WHEN sustained IS NOT NULL
                             THEN least(sustained, seen * pgqueue.rate_limit_aim()) END,
            learnt = cut,
            capacity = ceil(cut)::integer,
            paced_at = greatest(paced_at, r.paused_until),
            next_start_at = pgqueue.rate_limit_next_start(
                starts, ceil(cut)::integer, pgqueue.rate_limit_window_s(period_s, true),
                greatest(paced_at, r.paused_until))
        WHERE key = k;
        RETURN;
    END IF;
    -- The starts of the window that drew the 429, the upstream's: ours are dated when claimed,
    -- a few milliseconds before the upstream sees them, so its window reaches a little further
    -- back than ours does now (up to 50 ms, or half a spacing when that is less: counting one
    -- start too many would aim past the quota).
    tried := greatest(1, (SELECT count(*) FROM unnest(r.starts) AS s
                          WHERE s > now() - make_interval(secs => r.period_s + least(
                              0.05, 0.5 * r.period_s / r.learnt))));
    seen := greatest(1, least(tried - 1, coalesce(r.learnt, tried)));
    cut := greatest(1, least(coalesce(r.learnt, tried), tried) / 2);
    UPDATE pgqueue.rate_limits
    SET learnt = cut,
        capacity = ceil(cut)::integer,
        quota_seen = seen,
        sustained = CASE WHEN sustained IS NOT NULL
                         THEN least(sustained, seen * pgqueue.rate_limit_aim()) END,
        last_cut_at = now(),
        cut_starts = tried,
        cut_throttles = 1,
        good_since = r.paused_until,
        probe_after = r.paused_until + make_interval(secs => 2 * r.period_s),
        probe_step = 1,
        probe_step_at = r.paused_until,
        probe_from = NULL,
        probe_refusals = 0,
        paced_at = greatest(paced_at, r.paused_until),
        next_start_at = pgqueue.rate_limit_next_start(
            starts, ceil(cut)::integer, pgqueue.rate_limit_window_s(period_s, true),
            greatest(paced_at, r.paused_until))
    WHERE key = k;
END $$;

