-- pgqueue schema version 3: idle concurrency slots can be deleted safely.
--
-- One row of pgqueue.concurrency_slots per concurrency key, for ever: a service keyed by
-- project gains a row per project. Maintenance now deletes rows whose count is 0 and that no
-- live job uses. The race to rule out is an enqueue of a job of that key that has not
-- committed yet: its insert trigger found the row (ON CONFLICT DO NOTHING), the delete cannot
-- see the job, and without the row the claim would never admit the job (it reads a missing
-- row as a full key). So the trigger now holds the rows of its keys with FOR KEY SHARE until
-- the enqueue commits; the delete locks with FOR UPDATE SKIP LOCKED and so passes them by.
-- Claims lock slot rows FOR NO KEY UPDATE, which a KEY SHARE lock does not block: enqueues
-- never delay claims.

-- migrate:up
-- The live jobs of a key: what the delete checks. Partial, so it holds only live keyed jobs.
CREATE INDEX jobs_live_concurrency_key_idx ON pgqueue.jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state IN ('queued', 'running');

CREATE OR REPLACE FUNCTION pgqueue.ensure_concurrency_slot() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keys text[];
    held integer;
BEGIN
    SELECT array_agg(DISTINCT concurrency_key ORDER BY concurrency_key) INTO keys
    FROM new_rows WHERE concurrency_key IS NOT NULL;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    -- Keys in sorted order, so concurrent enqueues sharing keys wait for each other in one
    -- global order and cannot deadlock. Repeated when a row found by the insert was deleted
    -- before it could be locked (the delete committed in between).
    LOOP
        INSERT INTO pgqueue.concurrency_slots (key)
        SELECT unnest(keys) ORDER BY 1
        ON CONFLICT (key) DO NOTHING;
        SELECT count(*) INTO held FROM (
            SELECT 1 FROM pgqueue.concurrency_slots
            WHERE key = ANY (keys) ORDER BY key FOR KEY SHARE
        ) AS locked;
        EXIT WHEN held = array_length(keys, 1);
    END LOOP;
    RETURN NULL;
END $$;

-- migrate:down
CREATE OR REPLACE FUNCTION pgqueue.ensure_concurrency_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgqueue.concurrency_slots (key)
    SELECT DISTINCT concurrency_key FROM new_rows
    WHERE concurrency_key IS NOT NULL
    ORDER BY concurrency_key
    ON CONFLICT (key) DO NOTHING;
    RETURN NULL;
END $$;

DROP INDEX pgqueue.jobs_live_concurrency_key_idx;
