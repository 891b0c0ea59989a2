-- pgqueue schema version 7: rate limits, decided inside the claim.
--
-- A job may name a rate-limit key (`jobs.rate_limit_key`); a key's limit is a row of
-- pgqueue.rate_limits, set by `Queue.set_rate_limit`: at most `capacity` jobs of the key start
-- in any window of `period_s` seconds, across every worker and drain. A sliding log, not a
-- token bucket: a bucket of N that refills N per period lets 2N start within one period (N
-- at once, then N refilled), which an upstream selling "N per minute" answers with 429s.
-- `starts` holds the start times (the claims' now()) within the last period, oldest first:
-- at most `capacity` of them, so the row stays small. The claim locks the rows of its
-- candidates' keys FOR NO KEY UPDATE in key order (as it does concurrency slots) and admits
-- per key at most `capacity` minus the starts still in the window: a worker never claims a
-- job it may not start.
--
-- Each start is appended by a row trigger on the job's move from queued to running, at the
-- end of the claim's statement and under the lock it took, so nothing changes the window
-- between the count and the append; its WHEN clause makes it free for unkeyed jobs.
--
-- `next_start_at` is when a full window frees its oldest start (NULL while a start is free),
-- and `paused_until` is a throttle: a handler whose upstream answered 429 paused the key. The
-- claim's scan skips the jobs of a key with either in the future by one comparison each, so
-- a held-back backlog costs no more than a concurrency key at its limit; the worker's
-- next-due lookup reads both, so it wakes when the key allows a start again.
--
-- A key without a row has no limit; a row without a capacity only carries a throttle.
-- Enqueues never touch these rows (no trigger): a key's limit is the application's setting,
-- not something each job brings.

-- migrate:up
ALTER TABLE pgqueue.jobs ADD COLUMN rate_limit_key text
    CONSTRAINT jobs_rate_limit_key_length CHECK (length(rate_limit_key) BETWEEN 1 AND 200);
COMMENT ON COLUMN pgqueue.jobs.rate_limit_key IS
    'jobs sharing it start no faster than its row in pgqueue.rate_limits allows';

-- The held-back jobs of a key: what the workers' next-due lookup checks for each paused or
-- full key. Partial, so it holds only queued keyed jobs and the claim never reads it.
CREATE INDEX jobs_queued_rate_limit_key_idx ON pgqueue.jobs (rate_limit_key)
    WHERE rate_limit_key IS NOT NULL AND state = 'queued';

CREATE TABLE pgqueue.rate_limits (
    key           text PRIMARY KEY CONSTRAINT rate_limits_key_length
                      CHECK (length(key) BETWEEN 1 AND 200),
    capacity      integer CONSTRAINT rate_limits_capacity_range
                      CHECK (capacity BETWEEN 1 AND 10000),
    period_s      float8 CONSTRAINT rate_limits_period_range
                      CHECK (period_s > 0 AND period_s <= 86400),
    starts        timestamptz[] NOT NULL DEFAULT '{}',
    next_start_at timestamptz,
    paused_until  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_limits_capacity_with_period CHECK ((capacity IS NULL) = (period_s IS NULL))
);
COMMENT ON TABLE pgqueue.rate_limits IS
    'per rate-limit key: at most capacity starts in any window of period_s seconds (the recent '
    'starts kept in starts), and a throttle (paused_until) a handler set after a 429';

-- One start of a job of a limited key: the window's starts lose those older than the period
-- and gain now(); a full window says when its oldest start leaves it.
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

-- migrate:down
DROP TRIGGER jobs_record_rate_limit_start ON pgqueue.jobs;
DROP FUNCTION pgqueue.record_rate_limit_start();
DROP TABLE pgqueue.rate_limits;
DROP INDEX pgqueue.jobs_queued_rate_limit_key_idx;
ALTER TABLE pgqueue.jobs DROP COLUMN rate_limit_key;
