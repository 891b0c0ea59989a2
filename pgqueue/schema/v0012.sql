-- pgqueue schema version 12: each job's attempt history, and the workers alive now.
--
-- Attempts (pgqueue.attempts). A job row holds its current attempt only: a retried job's
-- earlier errors were overwritten, and a job that failed once and then succeeded kept the
-- first error as its `last_error`. Each attempt that ends now leaves a row here: the job, its
-- attempt number (`attempts` as the claim counted it), the worker that ran it, when it started
-- and ended, how it ended and its error. An attempt still running has no row: the job row is
-- that attempt (`started_at`, `worker_id`, state `running`), and readers show it from there.
--
-- One insert per attempt, at its end, and nothing at the claim: an insert at the start and an
-- update at the end would write two tuples per attempt (and a dead one) on the hot path; the
-- claim statement is unchanged. Who writes the row:
--   - a success: the statements of success themselves (queries COMPLETE_JOBS, COMPLETE_JOB,
--     COMPLETE_AND_CLAIM_JOBS), one INSERT per batch in the same statement. Measured with
--     EXPLAIN ANALYZE on 50 completions: 20 us a job without a history, 23-27 with these
--     inserts, 40-60 with the row trigger below doing it (a trigger call and an executor run
--     per row). Success is the path every job takes, so it gets the cheap way.
--   - every other end (a failure, a retry, a throttle, a cancel, the reaper of expired leases,
--     a release at shutdown, and anyone's SQL moving a job on from `running`): the row trigger
--     jobs_record_attempt, AFTER UPDATE OF state WHEN the job leaves `running` for another
--     state than `succeeded`, in the statement that ends the attempt. These carry the errors
--     the history is for, and no writer can forget them. (A hand-written UPDATE to
--     `succeeded` leaves no row of its own; the job row still says who ran it last.)
--
-- How the attempt ended (`outcome`), from the states before and after:
--   succeeded   the job succeeded;
--   retried     it failed (or its lease expired) and the job will run again;
--   failed      it failed and the job failed for good (no attempt left, or not retryable);
--   cancelled   it ended cancelled (on request, or a cancel pending when it failed);
--   released    it gave its attempt back: a shutdown's release, a throttle (a 429): the job
--               runs again with the same attempt number, so numbers may repeat.
-- The error is the job's `last_error` as that statement wrote it; a release keeps the job's
-- previous error, which is not this attempt's, so a release records one only when it wrote
-- one. A job that succeeds has no current error: its `last_error` is cleared (the statements
-- of success do it), and its earlier ones are here.
--
-- The rows go when their job goes, as checkpoints do (v9) and for the same reasons: a
-- statement-level AFTER DELETE trigger (one DELETE per purge batch) and an AFTER TRUNCATE
-- one, not a cascading foreign key (which would make `TRUNCATE pgqueue.jobs` fail unless it
-- named this table, and runs a statement per deleted job).
--
-- Workers (pgqueue.workers). Nothing recorded which workers are alive: `worker_id` on running
-- jobs names only the busy ones. Each worker upserts its row on a maintenance chore (every
-- third of its lease): host, pid, queues, slots and slots in use, and `expires_at`, after
-- which a row no longer beat is stale (a killed worker). A worker that exits cleanly deletes
-- its row; stale rows are shown as stale, and pruned by any worker an hour after they expired.

-- migrate:up
CREATE TABLE pgqueue.attempts (
    job_id      bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    attempt     integer NOT NULL,
    worker_id   text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL CONSTRAINT attempts_outcome_known
                    CHECK (outcome IN ('succeeded', 'retried', 'failed', 'cancelled', 'released')),
    error       text,
    -- Led by the job: a job's history is one range of this index, and so is its deletion.
    PRIMARY KEY (job_id, id)
);
COMMENT ON TABLE pgqueue.attempts IS
    'one row per ended attempt of a job (its worker, start, end, outcome and error), written by '
    'the statements of success and the trigger jobs_record_attempt; deleted with the job';

CREATE FUNCTION pgqueue.record_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outcome text := CASE
        WHEN NEW.state = 'cancelled' THEN 'cancelled'
        WHEN NEW.state = 'failed' THEN 'failed'
        WHEN NEW.attempts < OLD.attempts THEN 'released'
        ELSE 'retried' END;
BEGIN
    INSERT INTO pgqueue.attempts (job_id, attempt, worker_id, started_at, outcome, error)
    VALUES (
        OLD.id, OLD.attempts, OLD.worker_id, OLD.started_at, outcome,
        CASE WHEN outcome = 'released' AND NEW.last_error IS NOT DISTINCT FROM OLD.last_error
                 THEN NULL
             ELSE NEW.last_error END);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_record_attempt
    AFTER UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN (OLD.state = 'running' AND NEW.state NOT IN ('running', 'succeeded'))
    EXECUTE FUNCTION pgqueue.record_attempt();

CREATE FUNCTION pgqueue.delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- `= ANY (ARRAY(...))`: one index probe per deleted job, never a scan of the table.
    DELETE FROM pgqueue.attempts
    WHERE job_id = ANY (ARRAY(SELECT id FROM deleted_jobs));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_delete_attempts
    AFTER DELETE ON pgqueue.jobs REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.delete_attempts();

CREATE FUNCTION pgqueue.truncate_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE pgqueue.attempts;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_truncate_attempts
    AFTER TRUNCATE ON pgqueue.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.truncate_attempts();

CREATE TABLE pgqueue.workers (
    id           text PRIMARY KEY CONSTRAINT workers_id_length CHECK (length(id) BETWEEN 1 AND 200),
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL CONSTRAINT workers_concurrency_positive CHECK (concurrency >= 1),
    running      integer NOT NULL DEFAULT 0 CONSTRAINT workers_running_range CHECK (running >= 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
COMMENT ON TABLE pgqueue.workers IS
    'one row per worker, upserted by its maintenance loop; running = slots in use; a row whose '
    'expires_at passed belongs to a worker that stopped beating (stale); deleted on a clean exit';

-- migrate:down
DROP TABLE pgqueue.workers;
DROP TRIGGER jobs_truncate_attempts ON pgqueue.jobs;
DROP FUNCTION pgqueue.truncate_attempts();
DROP TRIGGER jobs_delete_attempts ON pgqueue.jobs;
DROP FUNCTION pgqueue.delete_attempts();
DROP TRIGGER jobs_record_attempt ON pgqueue.jobs;
DROP FUNCTION pgqueue.record_attempt();
DROP TABLE pgqueue.attempts;
