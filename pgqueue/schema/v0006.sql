-- pgqueue schema version 6: schedules of periodic jobs.
--
-- One row per schedule (`Registry.periodic`): its kind, queue and expression as the workers
-- last saw them, and the last tick that became a job. A tick is fired by the worker whose
-- UPDATE moves `last_tick` forward; another worker's UPDATE of the same tick then waits on
-- the row lock, re-reads `last_tick` and finds nothing to do: one job per tick, fleet-wide.
-- The dashboard lists schedules from here.

-- migrate:up
CREATE TABLE pgqueue.schedules (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    kind        text NOT NULL,
    queue       text NOT NULL,
    schedule    text NOT NULL,
    last_tick   timestamptz NOT NULL,
    next_tick   timestamptz NOT NULL,
    last_job_id bigint,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE pgqueue.schedules;
