-- pgqueue schema version 8: the governor of a paid upstream, decided in Postgres.
--
-- Four rules a claim obeys, so that every worker and every serverless drain spends the upstream
-- the same way:
--
-- * Fair turns (jobs.fairness_key, fairness_weight). Start-time fair queueing with the tags
--   kept in run_at: a job of a fairness key that may run now is given run_at = the later of its
--   key's last tag and the queue's head (the oldest runnable job of its queue and priority),
--   and the key's tag moves on by TURN_US / weight microseconds. A backlog of one key then
--   sits in run_at order one turn apart, and a key that arrives later slots its jobs in at the
--   head, between the backlog's (an idle key's first three jobs share one turn, so that a
--   user's first few shots go in the first round): the claim's own (priority, run_at, id)
--   order takes turns, with
--   no change to the claim statement and nothing paid by jobs without a key. Tags in the
--   future are a few microseconds per job (a backlog of 100,000 of one key reaches a second
--   ahead), far less than any worker drains, so no slot waits for them. A job retried later
--   keeps the run_at of its retry (it waits its backoff as before); a job delayed on purpose
--   keeps its run_at. The keys' tags live in pgqueue.fair_turns, one row per queue and key.
--
-- * Budgets (pgqueue.budgets; jobs.cost, budget_keys). A budget is an amount per period
--   (windows aligned to the epoch: a period of 86400 s is a UTC day). The claim reserves a
--   job's cost against each key it names and starts only what fits beside what is spent in
--   the window and what running jobs hold; a job that does not fit stays queued, untouched
--   (parked). When the attempt leaves `running` the reservation is settled: the window is
--   charged what the handler reported (jobs.attempt_cost, via ctx.charge) or, when it said
--   nothing, the whole cost (an attempt that died mid-call may have paid). jobs.spent sums what
--   the job's attempts were charged.
--
-- * A circuit breaker per rate-limit key (pgqueue.rate_limits.breaker_*). Upstream failures
--   the handler reports (errors.UpstreamDown) count; `breaker_threshold` of them in a row,
--   within `breaker_window_s`, open it: `breaker_until` holds every job of the key back (the
--   claim's scan skips it, as it skips a throttle). Once it passes, the claim admits one
--   probe (the start trigger marks the breaker half-open and holds the key while the probe
--   runs); the probe's success closes it, its failure opens it again for twice as long (up to
--   64 times `breaker_open_s`). A success of any job of the key resets the count.
--
-- * An adaptive rate (rate_limits.adaptive, ceiling, learnt). `capacity` stays what the claim
--   obeys; on an adaptive key it is the learnt rate, rounded down: a 429 (a throttle) cuts it
--   by half (once per period: the other calls of the same window that get 429 are the same
--   signal), and each success adds 1/capacity while the key's window is full, so a period of
--   successes at the limit adds one start (TCP's congestion avoidance). It never exceeds
--   `ceiling` (the configured limit) when one is set, and below the rate it last sustained
--   without a 429 (`sustained`) it climbs twice as fast, so a cut is won back sooner. A key
--   without a ceiling has no limit until its first 429.
--
-- Lock order, for every writer: the job's row, its concurrency slot, its budgets (in key
-- order), its rate-limit row. Claims take them in this order in their CTEs; the row triggers
-- that fire when a job leaves or enters `running` fire in name order: jobs_count_running,
-- then jobs_govern (budgets, then the rate-limit key: one trigger, one WHEN for the jobs
-- nothing governs, as before this version). A breaker's failure is written after the job's
-- own statement, so it comes last too.

-- migrate:up
ALTER TABLE pgqueue.jobs
    ADD COLUMN fairness_key text CONSTRAINT jobs_fairness_key_length
        CHECK (length(fairness_key) BETWEEN 1 AND 200),
    ADD COLUMN fairness_weight real CONSTRAINT jobs_fairness_weight_range
        CHECK (fairness_weight > 0 AND fairness_weight <= 100),
    ADD COLUMN cost numeric CONSTRAINT jobs_cost_range CHECK (cost >= 0 AND cost < 1e12),
    ADD COLUMN budget_keys text[] CONSTRAINT jobs_budget_keys_shape
        CHECK (cardinality(budget_keys) BETWEEN 1 AND 8),
    ADD COLUMN attempt_cost numeric CONSTRAINT jobs_attempt_cost_range
        CHECK (attempt_cost >= 0 AND attempt_cost < 1e12),
    ADD COLUMN spent numeric;
COMMENT ON COLUMN pgqueue.jobs.fairness_key IS
    'jobs of different keys take turns (in proportion to fairness_weight) within a priority';
COMMENT ON COLUMN pgqueue.jobs.cost IS
    'what one attempt may spend: reserved against each of budget_keys while it runs';
COMMENT ON COLUMN pgqueue.jobs.attempt_cost IS
    'what the running attempt reported it spent (ctx.charge); the whole cost when NULL';
COMMENT ON COLUMN pgqueue.jobs.spent IS 'what the attempts of this job were charged, summed';

-- The parked jobs of a budget: what a raised budget wakes and the next-due lookup checks.
CREATE INDEX jobs_queued_budget_keys_idx ON pgqueue.jobs USING gin (budget_keys)
    WHERE budget_keys IS NOT NULL AND state = 'queued';

-- ---------------------------------------------------------------------------------------
-- Fair turns.
CREATE TABLE pgqueue.fair_turns (
    queue          text NOT NULL,
    key            text NOT NULL,
    tag_us         float8 NOT NULL,  -- the key's next free tag, microseconds since the epoch
    burst_until_us float8 NOT NULL,  -- below it, the key's jobs share turns (see below)
    start_us       float8 NOT NULL,  -- the tag its last job was given
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, key)
);
COMMENT ON TABLE pgqueue.fair_turns IS
    'per queue and fairness key: where the key''s next job is placed in the queue''s order';

-- A job of a key that may run now takes its key's next tag, or the queue's head when the key
-- was idle (its tag not ahead of the head: no credit is saved up). An idle key's first
-- burst_turns jobs share one turn, so that a user who arrives behind a backlog gets their
-- few shots going in the first round, not one per round beside the backlog's owner (who had
-- every turn until then); later jobs take a whole turn each (turn_us / weight).
CREATE FUNCTION pgqueue.take_fair_turn() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head timestamptz;
    head_us float8;
    turn float8;
    start float8;
    turn_us CONSTANT float8 := 10;  -- one turn of a key of weight 1, in microseconds
    burst_turns CONSTANT float8 := 3;  -- jobs an idle key places within its first turn
BEGIN
    IF NEW.run_at > now() THEN
        RETURN NEW;  -- delayed on purpose: it runs when asked, not in turn
    END IF;
    -- The queue's head: its oldest job that may run now (the next to be served), or now().
    SELECT least(min(j.run_at), now()) INTO head
    FROM (SELECT run_at FROM pgqueue.jobs
          WHERE state = 'queued' AND queue = NEW.queue AND priority = NEW.priority
          ORDER BY run_at LIMIT 1) AS j;
    head_us := extract(epoch FROM coalesce(head, now())) * 1e6;
    turn := turn_us / coalesce(NEW.fairness_weight, 1);
    INSERT INTO pgqueue.fair_turns AS f (queue, key, tag_us, burst_until_us, start_us)
    VALUES (NEW.queue, NEW.fairness_key, head_us + turn / burst_turns, head_us + turn, head_us)
    ON CONFLICT (queue, key) DO UPDATE
    SET start_us = CASE WHEN f.tag_us <= head_us THEN head_us ELSE f.tag_us END,
        burst_until_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn
                              ELSE f.burst_until_us END,
        tag_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn / burst_turns
                      WHEN f.tag_us + turn / burst_turns <= f.burst_until_us
                          THEN f.tag_us + turn / burst_turns
                      ELSE f.tag_us + turn END,
        updated_at = now()
    RETURNING f.start_us INTO start;
    NEW.run_at := to_timestamp(start / 1e6);
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_take_fair_turn
    BEFORE INSERT ON pgqueue.jobs FOR EACH ROW
    WHEN (NEW.fairness_key IS NOT NULL)
    EXECUTE FUNCTION pgqueue.take_fair_turn();

-- ---------------------------------------------------------------------------------------
-- Budgets.
CREATE TABLE pgqueue.budgets (
    key          text PRIMARY KEY CONSTRAINT budgets_key_length
                     CHECK (length(key) BETWEEN 1 AND 200),
    amount       numeric NOT NULL CONSTRAINT budgets_amount_range
                     CHECK (amount >= 0 AND amount < 1e12),
    period_s     float8 NOT NULL CONSTRAINT budgets_period_range
                     CHECK (period_s >= 1 AND period_s <= 31622400),
    window_start timestamptz NOT NULL DEFAULT '-infinity',
    spent        numeric NOT NULL DEFAULT 0,  -- charged within the window that starts then
    reserved     numeric NOT NULL DEFAULT 0,  -- held by running attempts
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgqueue.budgets IS
    'per budget key: at most amount spent per period_s (windows aligned to the epoch); '
    'running attempts hold their cost in reserved until they end';

-- The start of the window that holds `at`, for a period of `period_s` seconds.
CREATE FUNCTION pgqueue.budget_window(period_s float8, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM at) / period_s) * period_s)
$$;

-- A claimed job's cost is reserved against each of its budgets (the claim locked them).
CREATE FUNCTION pgqueue.reserve_budget(keys text[], cost numeric) RETURNS void
LANGUAGE sql AS $$
    UPDATE pgqueue.budgets AS b
    SET reserved = b.reserved + cost,
        spent = CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                     THEN b.spent ELSE 0 END,
        window_start = pgqueue.budget_window(b.period_s, now()),
        updated_at = now()
    WHERE b.key = ANY (keys)
$$;

-- An attempt that ends: the job records its charge (before the row is written). An attempt
-- given back (a throttle, a wait for the breaker, a release at shutdown: its count goes down
-- again) is charged only what it reported: a 429 or a 503 bought nothing, and a call cut off
-- at shutdown is repeated under the same idempotency key, which a provider does not charge
-- twice.
CREATE FUNCTION pgqueue.charge_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.attempt_cost := coalesce(OLD.attempt_cost,
                                 CASE WHEN NEW.attempts < OLD.attempts THEN 0 ELSE OLD.cost END);
    NEW.spent := coalesce(OLD.spent, 0) + NEW.attempt_cost;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_charge_attempt
    BEFORE UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN (OLD.cost IS NOT NULL AND OLD.state = 'running' AND NEW.state <> 'running')
    EXECUTE FUNCTION pgqueue.charge_attempt();

-- A new attempt starts with nothing reported (the last one's charge stays on the row until then,
-- for the settle trigger after it and for anyone reading what it was charged).
CREATE FUNCTION pgqueue.clear_attempt_cost() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.attempt_cost := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_clear_attempt_cost
    BEFORE UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN (NEW.cost IS NOT NULL AND NEW.state = 'running' AND OLD.state <> 'running'
          AND OLD.attempt_cost IS NOT NULL)
    EXECUTE FUNCTION pgqueue.clear_attempt_cost();

-- ... and its budgets trade the reservation for the charge (in the window the attempt ends in).
CREATE FUNCTION pgqueue.settle_budget(keys text[], cost numeric, charge numeric) RETURNS void
LANGUAGE sql AS $$
    UPDATE pgqueue.budgets AS b
    SET reserved = greatest(0, b.reserved - cost),
        spent = CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                     THEN b.spent ELSE 0 END + charge,
        window_start = pgqueue.budget_window(b.period_s, now()),
        updated_at = now()
    WHERE b.key = ANY (keys)
$$;

-- A running job deleted (by hand: pgqueue deletes only finished jobs) gives its reservation
-- back, charged the whole cost (it may have paid).
CREATE FUNCTION pgqueue.settle_deleted_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgqueue.settle_budget(OLD.budget_keys, OLD.cost,
                                  coalesce(OLD.attempt_cost, OLD.cost));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_govern_delete
    AFTER DELETE ON pgqueue.jobs FOR EACH ROW
    WHEN (OLD.budget_keys IS NOT NULL AND OLD.cost IS NOT NULL AND OLD.state = 'running')
    EXECUTE FUNCTION pgqueue.settle_deleted_budget();

-- ---------------------------------------------------------------------------------------
-- The breaker and the adaptive rate, on the rate-limit key's row.
ALTER TABLE pgqueue.rate_limits
    ADD COLUMN breaker_threshold integer CONSTRAINT rate_limits_breaker_threshold_range
        CHECK (breaker_threshold BETWEEN 1 AND 1000),
    ADD COLUMN breaker_window_s float8 CONSTRAINT rate_limits_breaker_window_range
        CHECK (breaker_window_s > 0 AND breaker_window_s <= 86400),
    ADD COLUMN breaker_open_s float8 CONSTRAINT rate_limits_breaker_open_range
        CHECK (breaker_open_s > 0 AND breaker_open_s <= 86400),
    ADD COLUMN breaker_state text NOT NULL DEFAULT 'closed'
        CONSTRAINT rate_limits_breaker_state CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    ADD COLUMN breaker_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN breaker_first_failure_at timestamptz,
    ADD COLUMN breaker_trips integer NOT NULL DEFAULT 0,
    ADD COLUMN breaker_until timestamptz,
    ADD COLUMN breaker_probe_job bigint,
    ADD COLUMN adaptive boolean NOT NULL DEFAULT false,
    ADD COLUMN ceiling integer CONSTRAINT rate_limits_ceiling_range
        CHECK (ceiling BETWEEN 1 AND 10000),
    ADD COLUMN learnt float8,
    ADD COLUMN sustained float8,
    ADD COLUMN last_cut_at timestamptz,
    ADD CONSTRAINT rate_limits_breaker_complete
        CHECK ((breaker_threshold IS NULL) = (breaker_window_s IS NULL)
               AND (breaker_threshold IS NULL) = (breaker_open_s IS NULL)),
    -- An adaptive key with no ceiling counts its starts over a period before it has a limit.
    DROP CONSTRAINT rate_limits_capacity_with_period,
    ADD CONSTRAINT rate_limits_capacity_with_period
        CHECK (capacity IS NULL OR period_s IS NOT NULL),
    ADD CONSTRAINT rate_limits_adaptive_period CHECK (NOT adaptive OR period_s IS NOT NULL);

-- One start of a job of a key: its window gains the start (a limited key), and a breaker whose
-- open period passed lets this job through as its probe, holding the key while it runs (for
-- its lease, or its time limit if longer: a probe whose worker died lets the next one go).
CREATE FUNCTION pgqueue.rate_limit_started(job pgqueue.jobs) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kept timestamptz[];
    cap integer;
    period float8;
    horizon timestamptz;
    breaker text;
    learning boolean;
BEGIN
    SELECT r.starts, r.capacity, r.period_s, r.breaker_state, r.adaptive
    INTO kept, cap, period, breaker, learning
    FROM pgqueue.rate_limits AS r
    WHERE r.key = job.rate_limit_key
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- no limit, no breaker: nothing to count
    END IF;
    IF breaker <> 'closed' THEN
        UPDATE pgqueue.rate_limits
        SET breaker_state = 'half_open',
            breaker_probe_job = job.id,
            breaker_until = greatest(job.lease_expires_at,
                                     now() + make_interval(secs => coalesce(job.timeout_s, 0))),
            updated_at = now()
        WHERE key = job.rate_limit_key;
    END IF;
    IF cap IS NULL AND NOT learning THEN
        RETURN;
    END IF;
    horizon := now() - make_interval(secs => period);
    -- The array is oldest first, so only a stale head means there is anything to drop; the
    -- other starts of the same claim append without rereading the window.
    IF cardinality(kept) > 0 AND kept[1] <= horizon THEN
        kept := ARRAY(SELECT u.t FROM unnest(kept) WITH ORDINALITY AS u(t, n)
                      WHERE u.t > horizon ORDER BY u.n);
    END IF;
    -- A claim that waited for another's lock has an older now() than the starts that claim
    -- appended: record it no older than them, keeping the array sorted (later by the wait at
    -- most, which only holds the window a little longer).
    kept := kept || greatest(now(), kept[cardinality(kept)]);
    UPDATE pgqueue.rate_limits
    SET starts = kept,
        next_start_at = CASE WHEN cardinality(kept) >= cap
                             THEN kept[cardinality(kept) - cap + 1]
                                  + make_interval(secs => period) END,
        updated_at = now()
    WHERE key = job.rate_limit_key;
    RETURN;
END $$;

DROP TRIGGER jobs_record_rate_limit_start ON pgqueue.jobs;
DROP FUNCTION pgqueue.record_rate_limit_start();

-- A job of a key succeeded: its upstream answered. The breaker closes (a probe's success) or
-- its count of failures in a row starts again; an adaptive key at its limit climbs.
CREATE FUNCTION pgqueue.rate_limit_succeeded(k text) RETURNS void LANGUAGE plpgsql AS $$
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

-- Every change of a governed job's state that matters, in one row trigger (one WHEN to test
-- for the jobs nothing governs, as before this version): its budgets first, then its
-- rate-limit key, after its concurrency slot (jobs_count_running fires before it, by name):
-- the lock order of the claim.
CREATE FUNCTION pgqueue.govern() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.budget_keys IS NOT NULL AND NEW.cost IS NOT NULL THEN
        IF NEW.state = 'running' THEN
            PERFORM pgqueue.reserve_budget(NEW.budget_keys, NEW.cost);
        ELSE
            PERFORM pgqueue.settle_budget(OLD.budget_keys, OLD.cost, NEW.attempt_cost);
        END IF;
    END IF;
    IF NEW.rate_limit_key IS NOT NULL THEN
        IF NEW.state = 'running' AND OLD.state = 'queued' THEN
            PERFORM pgqueue.rate_limit_started(NEW);
        ELSIF NEW.state = 'succeeded' THEN
            PERFORM pgqueue.rate_limit_succeeded(NEW.rate_limit_key);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_govern
    AFTER UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN ((NEW.rate_limit_key IS NOT NULL OR NEW.budget_keys IS NOT NULL)
          AND (OLD.state = 'running') <> (NEW.state = 'running'))
    EXECUTE FUNCTION pgqueue.govern();

-- A 429 (a handler's throttle) on key `k`: no job of it starts for `pause_s`; an adaptive key
-- learns from it, once per period (the other 429s of the same window are the same signal):
-- its rate is cut to half of what got the 429 (its learnt rate, or the starts in the window
-- when fewer were made), and what it had sustained until then is remembered.
CREATE FUNCTION pgqueue.throttle_rate_limit_key(k text, pause_s float8) RETURNS void
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

-- Would a transient upstream failure of key `k` (of job `job`) now spend no attempt? Yes while
-- the breaker is open or probing, and for the failure that opens it: those jobs wait for the
-- upstream, not for a fix of their own. A plain read, taken before the job's failure is written
-- (the breaker's row is written after it, in the lock order); two racing failures may both
-- be spared, which costs nothing.
CREATE FUNCTION pgqueue.upstream_failure_is_spared(k text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_or(
        r.breaker_threshold IS NOT NULL
        AND (r.breaker_state <> 'closed'
             OR CASE WHEN r.breaker_first_failure_at
                          > now() - make_interval(secs => r.breaker_window_s)
                     THEN r.breaker_failures ELSE 0 END + 1 >= r.breaker_threshold)), false)
    FROM pgqueue.rate_limits AS r WHERE r.key = k
$$;

-- A transient upstream failure of job `job` of key `k`: one more in a row (within the window)
-- on a closed breaker, which opens at the threshold; the probe's failure opens it again, for
-- twice as long each time (at most 64 times the open period). Failures of calls that started
-- before the breaker opened are old news while it is open. Returns the breaker's state.
CREATE FUNCTION pgqueue.record_upstream_failure(k text, job bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r pgqueue.rate_limits;
BEGIN
    SELECT * INTO r FROM pgqueue.rate_limits WHERE key = k FOR NO KEY UPDATE;
    IF NOT FOUND OR r.breaker_threshold IS NULL THEN
        RETURN NULL;
    END IF;
    IF r.breaker_state = 'closed' THEN
        IF r.breaker_first_failure_at > now() - make_interval(secs => r.breaker_window_s) THEN
            r.breaker_failures := r.breaker_failures + 1;
        ELSE
            r.breaker_failures := 1;
            r.breaker_first_failure_at := now();
        END IF;
        IF r.breaker_failures < r.breaker_threshold THEN
            UPDATE pgqueue.rate_limits
            SET breaker_failures = r.breaker_failures,
                breaker_first_failure_at = r.breaker_first_failure_at, updated_at = now()
            WHERE key = k;
            RETURN 'closed';
        END IF;
    ELSIF r.breaker_state = 'open' OR r.breaker_probe_job IS DISTINCT FROM job THEN
        RETURN r.breaker_state;  -- a call from before it opened
    END IF;
    UPDATE pgqueue.rate_limits
    SET breaker_state = 'open',
        breaker_trips = r.breaker_trips + 1,
        breaker_until = now() + make_interval(
            secs => r.breaker_open_s * power(2, least(r.breaker_trips, 6))),
        breaker_failures = r.breaker_failures,
        breaker_first_failure_at = r.breaker_first_failure_at,
        breaker_probe_job = NULL,
        updated_at = now()
    WHERE key = k;
    RETURN 'open';
END $$;


-- ---------------------------------------------------------------------------------------
-- job_status gains what an application shows of the governor: what a job was charged, and
-- whether it waits for a budget (the one wait an application may choose not to time out:
-- such a job starts when its budget allows, never fails for it). And the job's result.
CREATE OR REPLACE VIEW pgqueue.job_status AS
SELECT id, queue, kind, state, attempts, max_attempts, progress, last_error, run_at,
       created_at, started_at, finished_at,
       -- live: someone will still move this job on (it waits, or its lease is current)
       (state = 'queued' OR (state = 'running' AND lease_expires_at >= now())) AS is_live,
       result, spent,
       CASE WHEN state = 'queued' AND budget_keys IS NOT NULL THEN EXISTS (
           SELECT 1 FROM pgqueue.budgets AS b
           WHERE b.key = ANY (budget_keys)
             AND CASE WHEN b.window_start = pgqueue.budget_window(b.period_s, now())
                      THEN b.spent ELSE 0 END + b.reserved + cost > b.amount)
       ELSE false END AS over_budget
FROM pgqueue.jobs;


-- migrate:down
DROP VIEW pgqueue.job_status;
CREATE VIEW pgqueue.job_status AS
SELECT id, queue, kind, state, attempts, max_attempts, progress, last_error, run_at,
       created_at, started_at, finished_at,
       -- live: someone will still move this job on (it waits, or its lease is current)
       (state = 'queued' OR (state = 'running' AND lease_expires_at >= now())) AS is_live
FROM pgqueue.jobs;
COMMENT ON VIEW pgqueue.job_status IS
    'Job status for applications: read this, not pgqueue.jobs. is_live: the job waits to run '
    'or runs under a current lease, so pgqueue will still move it on; false for finished jobs '
    'and for running jobs whose lease expired (the reaper will requeue or fail them)';
DROP FUNCTION pgqueue.record_upstream_failure(text, bigint);
DROP FUNCTION pgqueue.upstream_failure_is_spared(text);
DROP FUNCTION pgqueue.throttle_rate_limit_key(text, float8);
DROP TRIGGER jobs_govern ON pgqueue.jobs;
DROP FUNCTION pgqueue.govern();
DROP FUNCTION pgqueue.rate_limit_succeeded(text);
DROP FUNCTION pgqueue.rate_limit_started(pgqueue.jobs);
CREATE FUNCTION pgqueue.record_rate_limit_start() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kept timestamptz[];
    cap integer;
    period float8;
    horizon timestamptz;
BEGIN
    SELECT r.starts, r.capacity, r.period_s INTO kept, cap, period
    FROM pgqueue.rate_limits AS r
    WHERE r.key = NEW.rate_limit_key AND r.capacity IS NOT NULL
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- no limit: nothing to count
    END IF;
    horizon := now() - make_interval(secs => period);
    -- The array is oldest first, so only a stale head means there is anything to drop; the
    -- other starts of the same claim append without rereading the window.
    IF cardinality(kept) > 0 AND kept[1] <= horizon THEN
        kept := ARRAY(SELECT u.t FROM unnest(kept) WITH ORDINALITY AS u(t, n)
                      WHERE u.t > horizon ORDER BY u.n);
    END IF;
    -- A claim that waited for another's lock has an older now() than the starts that claim
    -- appended: record it no older than them, keeping the array sorted (later by the wait at
    -- most, which only holds the window a little longer).
    kept := kept || greatest(now(), kept[cardinality(kept)]);
    UPDATE pgqueue.rate_limits
    SET starts = kept,
        next_start_at = CASE WHEN cardinality(kept) >= cap
                             THEN kept[cardinality(kept) - cap + 1]
                                  + make_interval(secs => period) END,
        updated_at = now()
    WHERE key = NEW.rate_limit_key;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_record_rate_limit_start
    AFTER UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN (NEW.rate_limit_key IS NOT NULL AND NEW.state = 'running' AND OLD.state = 'queued')
    EXECUTE FUNCTION pgqueue.record_rate_limit_start();
-- An adaptive key that never had a limit forgets the starts it counted.
UPDATE pgqueue.rate_limits SET period_s = NULL, starts = '{}' WHERE capacity IS NULL;
ALTER TABLE pgqueue.rate_limits
    DROP CONSTRAINT rate_limits_adaptive_period,
    DROP CONSTRAINT rate_limits_capacity_with_period,
    ADD CONSTRAINT rate_limits_capacity_with_period CHECK ((capacity IS NULL) = (period_s IS NULL)),
    DROP CONSTRAINT rate_limits_breaker_complete,
    DROP COLUMN last_cut_at, DROP COLUMN sustained, DROP COLUMN learnt, DROP COLUMN ceiling,
    DROP COLUMN adaptive, DROP COLUMN breaker_probe_job, DROP COLUMN breaker_until, DROP COLUMN breaker_trips,
    DROP COLUMN breaker_first_failure_at, DROP COLUMN breaker_failures,
    DROP COLUMN breaker_state, DROP COLUMN breaker_open_s, DROP COLUMN breaker_window_s,
    DROP COLUMN breaker_threshold;
DROP TRIGGER jobs_govern_delete ON pgqueue.jobs;
DROP FUNCTION pgqueue.settle_deleted_budget();
DROP FUNCTION pgqueue.settle_budget(text[], numeric, numeric);
DROP TRIGGER jobs_clear_attempt_cost ON pgqueue.jobs;
DROP FUNCTION pgqueue.clear_attempt_cost();
DROP TRIGGER jobs_charge_attempt ON pgqueue.jobs;
DROP FUNCTION pgqueue.charge_attempt();
DROP FUNCTION pgqueue.reserve_budget(text[], numeric);
DROP FUNCTION pgqueue.budget_window(float8, timestamptz);
DROP TABLE pgqueue.budgets;
DROP TRIGGER jobs_take_fair_turn ON pgqueue.jobs;
DROP FUNCTION pgqueue.take_fair_turn();
DROP TABLE pgqueue.fair_turns;
DROP INDEX pgqueue.jobs_queued_budget_keys_idx;
ALTER TABLE pgqueue.jobs
    DROP COLUMN spent, DROP COLUMN attempt_cost, DROP COLUMN budget_keys, DROP COLUMN cost,
    DROP COLUMN fairness_weight, DROP COLUMN fairness_key;
