-- pgqueue schema version 4: an enqueue's commit no longer carries a NOTIFY.
--
-- Postgres serialises the commits of transactions that notify behind one lock, held across
-- the commit's WAL flush (group commit included): with the insert trigger below, concurrent
-- enqueues committed one at a time (pgbench, 10 clients, one row per transaction: 15,238
-- commits/s into a plain table, 5,397/s with this trigger). pgqueue's enqueue now sends the
-- notification itself: after the commit, coalesced across the callers of a process, when it
-- commits on its own; inside the caller's transaction when it joins one (pgqueue.notify).
-- A row inserted with plain SQL by someone else wakes no worker: the workers' poll finds it.
-- The slot notification of version 2 (a job of a concurrency key leaving `running`) stays.

-- migrate:up
DROP TRIGGER jobs_notify_enqueued ON pgqueue.jobs;
DROP FUNCTION pgqueue.notify_enqueued();

-- migrate:down
-- Version 1's trigger, as it was.
CREATE FUNCTION pgqueue.notify_enqueued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgqueue_jobs', queue)
    FROM (SELECT DISTINCT queue FROM new_rows WHERE state = 'queued') AS queues;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_enqueued
    AFTER INSERT ON pgqueue.jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_enqueued();
