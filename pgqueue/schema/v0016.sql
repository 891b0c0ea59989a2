-- pgqueue schema version 16: an adaptive key's 429 at the quota it measured costs one 429, not
-- a pause; a key with no ceiling paces its first burst.
--
-- Measured against an upstream whose quota moves (8 calls/s, 3/s, 12/s, a sliding second,
-- `Retry-After: 1`; `make bench`, `adaptive`), version 14 kept 0.66-0.73x of the quota. What a
-- 429 cost, not what the key learnt, held it there:
-- * A key that holds below the quota it measured learns that the quota rose only by starting
--   past it. In a phase whose quota did not rise that probe draws a 429, and version 14 paused
--   the whole key for its Retry-After and halved its rate: a second of the quota lost (3 to 12
--   calls) per probe. So it probed once in five periods, and found the 12/s phase seconds late.
-- * A key with no ceiling had no limit until its first 429, so its first burst was the fleet's
--   every free slot at once (20 starts, 12 of them 429s: most of the run's 429 budget).
-- This version:
-- * tells a refusal from a cut. A 429 is a refusal when the key knows its quota from an earlier
--   429 (`quota_seen`, `last_cut_at`) and either probes past it (`probe_from`: the rate its
--   probe climbed from) or its window holds more starts than that quota (the upstream dates
--   calls as they arrive, some milliseconds after our starts: one more than the quota lands in
--   its window now and then), and no refusal or cut came within the period. It is the answer to
--   a question the key asked: the refused call's job waits out its Retry-After (as every
--   throttled job does), and the key goes back to 97% of the quota, measured again from the
--   starts of the window before the refused call (`rate_limit_aim`), with no pause and no
--   halving; its next start waits until the upstream's window surely has room. It probes again
--   after a hold that grows with each refusal in a row (1 period, 2, then 3). A 429 to a call
--   started before the refusal was written is the same answer. Any other 429 (the quota fell)
--   pauses the key for its Retry-After and halves its rate, as before.
-- * measures a quota that rose: half a period of a probe without a refusal means the upstream
--   took every start of the last window, so `quota_seen` becomes that count, and the probe's
--   step (starts per period added, additively, per period of successes) grows fourfold, up to
--   twice the rate: a quota that rose from 3 to 12 a second is reached within two periods.
-- * limits an adaptive key's starts over its period and 25 ms more (`rate_limit_window_s`).
-- * starts a key with no ceiling at 25 starts a period (one per 40 ms for a 1 s period),
--   where it had no limit until its first 429: its first 429 now comes a start or two past
--   the quota, not a whole fleet's burst past it (measured: 12 429s unpaced, 5-8 paced at 50
--   or 100 a period). Until that 429 it climbs as a probe does (its step growing fourfold each
--   half period its pace binds), so an upstream with no quota is not held at 25.
-- Measured the same way, alone, this version keeps 0.89-0.91x of the quota with 4.6-4.9% of
-- its calls 429s. Fixed limits are untouched.

-- migrate:up
ALTER TABLE pgqueue.rate_limits
    ADD COLUMN probe_from float8,
    ADD COLUMN probe_refusals integer NOT NULL DEFAULT 0,
    ADD COLUMN refused_at timestamptz;
COMMENT ON COLUMN pgqueue.rate_limits.probe_from IS
    'adaptive key: the rate its current probe past quota_seen climbed from (NULL: not probing); '
    'a 429 while it probes is a refusal (no pause), any other one a cut';
COMMENT ON COLUMN pgqueue.rate_limits.probe_refusals IS
    'adaptive key: probes refused in a row since the quota it measured last rose (its hold '
    'before the next probe doubles with each)';

-- The window an adaptive key's starts are limited over: its period and 25 ms more. The quota
-- it measures is the upstream's, counted when calls arrive there, a few milliseconds after our
-- starts and not always by the same few: a window of exactly the period let the quota's count
-- through by our clock and one more by theirs now and then (a 429, after a fast climb a cut
-- and a pause). 25 ms stays within the 3% its pace keeps below the quota (at 50 ms the window
-- bound a pace of 97% and cost 2% of the quota, measured).
CREATE FUNCTION pgqueue.rate_limit_window_s(period_s float8, adaptive boolean) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT period_s + CASE WHEN adaptive THEN 0.025 ELSE 0 END
$$;

-- The share of the quota it measured an adaptive key holds at: the pace's slack and the
-- upstream's few milliseconds of lateness fit within the rest.
CREATE FUNCTION pgqueue.rate_limit_aim() RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT 0.97::float8
$$;

-- Where an adaptive key with no ceiling starts: starts per period.
CREATE FUNCTION pgqueue.rate_limit_first_pace() RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT 25::float8
$$;
-- A key that had no limit before its first 429 starts there now.
UPDATE pgqueue.rate_limits
SET learnt = pgqueue.rate_limit_first_pace(),
    capacity = ceil(pgqueue.rate_limit_first_pace())::integer
WHERE adaptive AND learnt IS NULL;

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
    -- Kept 100 ms past the window (throttle_rate_limit_key looks that far back); the window's
    -- counts filter by the period.
    horizon := started - make_interval(secs => period + 0.1);
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
        next_start_at = pgqueue.rate_limit_next_start(
            kept, cap, pgqueue.rate_limit_window_s(period, learning), paced),
        paced_at = paced,
        bound_at = bound,
        updated_at = now()
    WHERE key = job.rate_limit_key;
    RETURN;
END $$;

-- A job of a key succeeded: its upstream answered. The breaker closes (a probe's success) or
-- its count of failures in a row starts again; an adaptive key whose pace binds climbs: within
-- half a period back to the rate it last held a whole period, then within a period to 97% of
-- the quota it measured, where it holds (`probe_after`); past that it probes, `probe_step`
-- starts per period above where it was, and each half period the upstream refuses none of it
-- the quota measured becomes what the last window took and the step doubles. Each success
-- adds step / learnt: a period of successes at the pace adds `step` starts per period.
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

-- A 429 (a handler's throttle) on key `k`, answered to a call that started at `started` (NULL:
-- unknown). A probe's refusal (see the header) sends the key back to 97% of the quota it
-- measured and holds it there before the next probe; the key is not paused (the refused job
-- waits its own Retry-After). A call that started before that refusal was written, still on
-- its way then, that draws a 429 within the period is the same answer: it only leaves the
-- window (a fast probe can have a few such calls in flight). Any other 429: no job of the key
-- starts for `pause_s`, and an adaptive key learns from it. The first 429 of a period cuts its
-- rate to half of what got it (its learnt rate, or the starts of the window when fewer were
-- made) and notes the quota seen (the window's starts but this one); the next 429s of that
-- period are the same signal, but each says one more of the window's starts was refused: the
-- quota seen, what it held and its rate follow that down. It holds below the quota seen for
-- two periods after the pause.
CREATE FUNCTION pgqueue.throttle_rate_limit_key(k text, pause_s float8, started timestamptz)
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

-- The two-argument form (a worker of version 15 or before, rolling out): the start unknown.
CREATE OR REPLACE FUNCTION pgqueue.throttle_rate_limit_key(k text, pause_s float8)
RETURNS void LANGUAGE sql AS $$
    SELECT pgqueue.throttle_rate_limit_key(k, pause_s, NULL::timestamptz)
$$;

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

DROP FUNCTION pgqueue.throttle_rate_limit_key(text, float8, timestamptz);
DROP FUNCTION pgqueue.rate_limit_first_pace();
DROP FUNCTION pgqueue.rate_limit_aim();
DROP FUNCTION pgqueue.rate_limit_window_s(float8, boolean);
ALTER TABLE pgqueue.rate_limits
    DROP COLUMN refused_at, DROP COLUMN probe_refusals, DROP COLUMN probe_from;
