-- pgqueue schema version 7: rate limits, decided inside the claim.
--
-- A job may name a rate-limit key (`jobs.rate_limit_key`); a key's limit is a row of
-- pgqueue.rate_limits, set by `Queue.set_rate_limit`: at most `capacity` jobs of the key start
-- in any window of `period_s` seconds, across every worker and drain. A sliding log, not a
-- token bucket: a bucket of N that refills N per period lets 2N start within one period (N
-- at once, then N refilled), which an upstream selling "N per minute" answers with 429s.
-- `starts` holds the start times (the claims' now()) within the last period, oldest first:
-- at most `capacity` of them, so the row stays small. The claim locks the rows of its
-- candidates' keys FOR NO KEY UPDATE in key order (as it does concurrency slots), admits per
-- key at most `capacity` minus the starts still in the window, and appends its own starts in
-- the same statement: a worker never claims a job it may not start.
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

-- migrate:down
DROP TABLE pgqueue.rate_limits;
DROP INDEX pgqueue.jobs_queued_rate_limit_key_idx;
ALTER TABLE pgqueue.jobs DROP COLUMN rate_limit_key;
