-- pgqueue schema version 2: a freed concurrency slot wakes the queue's workers; the
-- job_status view that applications read job status through.

-- migrate:up
-- A job of a concurrency key that leaves `running` frees a slot that a job of the same key,
-- refused by every worker's last claim because the key was at its limit, can now take. No
-- insert happens, so nothing else would wake those workers before their next poll: notify
-- the queue. Postgres folds identical notifications of one transaction into one, so a batch
-- of completions costs one notification per queue.
CREATE OR REPLACE FUNCTION pgqueue.count_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state = 'running' THEN
        INSERT INTO pgqueue.concurrency_slots AS s (key, running) VALUES (NEW.concurrency_key, 1)
        ON CONFLICT (key) DO UPDATE SET running = s.running + 1;
    ELSE
        UPDATE pgqueue.concurrency_slots SET running = running - 1 WHERE key = OLD.concurrency_key;
        PERFORM pg_notify('pgqueue_jobs', OLD.queue);
    END IF;
    RETURN NULL;
END $$;

-- What applications read instead of pgqueue.jobs: the fields a person cares about, and
-- whether the job is live, so that the lease rules stay pgqueue's alone.
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

-- migrate:down
DROP VIEW pgqueue.job_status;

-- The body of version 1, without the notification.
CREATE OR REPLACE FUNCTION pgqueue.count_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state = 'running' THEN
        INSERT INTO pgqueue.concurrency_slots AS s (key, running) VALUES (NEW.concurrency_key, 1)
        ON CONFLICT (key) DO UPDATE SET running = s.running + 1;
    ELSE
        UPDATE pgqueue.concurrency_slots SET running = running - 1 WHERE key = OLD.concurrency_key;
    END IF;
    RETURN NULL;
END $$;
