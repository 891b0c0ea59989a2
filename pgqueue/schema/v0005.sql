-- pgqueue schema version 5: paused queues, and finished jobs counted per minute.
--
-- A queue is paused while it has a row in pgqueue.paused_queues: every claim (the worker's, a
-- drain's, the fused complete-and-claim) skips such queues, so no job of theirs starts until
-- the row is gone; jobs already running finish. A row per paused queue, not a flag on a row
-- per queue: with nothing paused the table is empty and the claim's anti-join probes an empty
-- index, and nothing has to create a queue's row before its first job.
--
-- The finished-job counters gain the minute a job finished in, so the dashboard's chart of jobs
-- finished per minute reads a few hundred counter rows instead of the jobs that finished in the
-- last hour (millions, on a busy queue). Only a job reaching a finished state is dated; the
-- deltas that take one away (a retry, a retention delete) carry no minute: they change the
-- totals, never the history. The maintenance fold keeps the last hour's minutes apart and
-- merges older ones into the undated row (pgqueue.queries.FOLD_FINISHED_COUNTS).

--
-- An index of the failed and cancelled jobs, for the dashboard's listing of them: they are few,
-- so a newest-first scan of the primary key for them read every succeeded row (1M rows, none
-- cancelled: 266 ms). Partial, so the claim and the completion, whose rows are queued, running
-- or succeeded, never write to it.

-- migrate:up
CREATE INDEX jobs_ended_badly_idx ON pgqueue.jobs (id) WHERE state IN ('failed', 'cancelled');

CREATE TABLE pgqueue.paused_queues (
    queue     text PRIMARY KEY CONSTRAINT paused_queues_queue_length
                  CHECK (length(queue) BETWEEN 1 AND 128),
    paused_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgqueue.paused_queues IS
    'queues no claim takes jobs from until their row is deleted (running jobs finish)';

ALTER TABLE pgqueue.finished_counts ADD COLUMN minute timestamptz;
COMMENT ON COLUMN pgqueue.finished_counts.minute IS
    'the minute these jobs finished in (date_trunc minute of finished_at); NULL: undated';

-- Version 1's function, with each arriving finished row dated by the minute it finished in and
-- each leaving one undated. An UPDATE by hand of a finished row that keeps it finished counts
-- it once more in its minute (never in the totals): pgqueue itself never does that.
CREATE OR REPLACE FUNCTION pgqueue.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgqueue.finished_counts (queue, state, minute, n)
        SELECT queue, state, date_trunc('minute', finished_at), count(*) FROM new_rows
        WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pgqueue.finished_counts (queue, state, n)
        SELECT queue, state, -count(*) FROM old_rows
        WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state;
    ELSE
        INSERT INTO pgqueue.finished_counts (queue, state, minute, n)
        SELECT queue, state, minute, sum(n) FROM (
            SELECT queue, state, date_trunc('minute', finished_at) AS minute, 1 AS n
            FROM new_rows WHERE state IN ('succeeded', 'failed', 'cancelled')
            UNION ALL
            SELECT queue, state, NULL, -1 FROM old_rows
            WHERE state IN ('succeeded', 'failed', 'cancelled')
        ) AS delta
        GROUP BY queue, state, minute HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

-- migrate:down
-- Version 1's function, as it was; the dated rows fold into undated ones first, so the
-- totals stay what they were.
CREATE OR REPLACE FUNCTION pgqueue.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgqueue.finished_counts (queue, state, n)
        SELECT queue, state, count(*) FROM new_rows
        WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pgqueue.finished_counts (queue, state, n)
        SELECT queue, state, -count(*) FROM old_rows
        WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state;
    ELSE
        INSERT INTO pgqueue.finished_counts (queue, state, n)
        SELECT queue, state, sum(n) FROM (
            SELECT queue, state, 1 AS n FROM new_rows
            WHERE state IN ('succeeded', 'failed', 'cancelled')
            UNION ALL
            SELECT queue, state, -1 FROM old_rows
            WHERE state IN ('succeeded', 'failed', 'cancelled')
        ) AS delta
        GROUP BY queue, state HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

WITH folded AS (
    DELETE FROM pgqueue.finished_counts RETURNING queue, state, n
)
INSERT INTO pgqueue.finished_counts (queue, state, n)
SELECT queue, state, sum(n) FROM folded GROUP BY queue, state HAVING sum(n) <> 0;

ALTER TABLE pgqueue.finished_counts DROP COLUMN minute;
DROP TABLE pgqueue.paused_queues;
DROP INDEX pgqueue.jobs_ended_badly_idx;
