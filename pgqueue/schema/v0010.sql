-- pgqueue schema version 10: starts counted when they happen; rows that are no longer needed
-- are found and deleted; the dashboard's sessions.
--
-- * A rate-limited start was recorded at the claim's now(), the time its statement (its
--   transaction) began. A claim that waited inside the statement for a lock (another claim
--   of the key, a transaction holding the key's row) recorded its start in the past by the
--   wait, and the next claim counted the window from that false time: with 1 start per 2 s
--   and a 3 s wait, two jobs started 2 ms apart. The start trigger now takes its time from
--   clock_timestamp() once the key's row is locked, and the claim counts the window at a
--   time read after its locks too (CLAIM_JOBS' `windows`).
--
-- * pgqueue.schedules.seen_at: when a scheduler whose registry has the schedule last said so
--   (each scheduler marks its schedules' rows every few minutes). A schedule removed from
--   every registry is no longer marked: the dashboard shows it as stale after an hour, and
--   the maintenance pass deletes it once nobody has marked it for a week (see
--   pgqueue/worker/maintenance.py for why not at once: during a deploy, workers with the old
--   and the new registry run side by side).
--
-- * pgqueue.dashboard_sessions: a signed-in browser's session. The cookie holds a random key
--   and never the credential; the row is found by the key's SHA-256 and holds the credential
--   sealed with a keystream derived from the key (pgqueue/dashboard/sessions.py), so neither
--   the cookie nor the database alone yields the token. Rows end at expires_at (the
--   dashboard refuses them after it, the maintenance pass deletes them) or at sign-out.

-- migrate:up
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

ALTER TABLE pgqueue.schedules ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN pgqueue.schedules.seen_at IS
    'when a scheduler whose registry has this schedule last said so: stale after an hour, '
    'deleted after a week';

CREATE TABLE pgqueue.dashboard_sessions (
    key_hash   bytea PRIMARY KEY CONSTRAINT dashboard_sessions_key_hash_length
                   CHECK (length(key_hash) = 32),
    sealed     bytea NOT NULL CONSTRAINT dashboard_sessions_sealed_length
                   CHECK (length(sealed) BETWEEN 1 AND 4096),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
COMMENT ON TABLE pgqueue.dashboard_sessions IS
    'signed-in dashboard browsers: the SHA-256 of the cookie''s key, the credential sealed '
    'with that key, and when the session ends';
CREATE INDEX dashboard_sessions_expires_at_idx ON pgqueue.dashboard_sessions (expires_at);

-- migrate:down
DROP TABLE pgqueue.dashboard_sessions;
ALTER TABLE pgqueue.schedules DROP COLUMN seen_at;
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_started(job pgqueue.jobs) RETURNS void
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
