-- pgqueue schema version 11: a SQL interface, for producers in any language.
--
-- `pgqueue.enqueue(kind => ..., payload => ..., ...)` enqueues one job inside the caller's own
-- transaction and returns its id (the existing job's id for a repeated idempotency key); the
-- workers of its queue are woken when that transaction commits, as a Python enqueue wakes them
-- (a NOTIFY queued in the transaction: Postgres sends it at the commit, drops it on a
-- rollback). `pgqueue.cancel(id)` and `pgqueue.retry(id)` return true when they changed the job.
--
-- One implementation, not two that drift apart: the insert is `pgqueue.enqueue_batch`, which
-- the Python `Queue` calls for every enqueue too, and `Queue.cancel` / `Queue.retry` call
-- `pgqueue.cancel_job` / `pgqueue.retry_job`, the functions `cancel` and `retry` are made of.
-- What `models.JobSpec` refused in Python alone (a weight without a fairness key, budget keys
-- without a cost, a budget key's length) are now constraints of the table, so a row from SQL
-- meets the same rules; the one rule about arguments, not rows (run_at or delay, not both),
-- is checked by `pgqueue.enqueue` itself.
--
-- A producer learns that a job finished without polling by asking for it: a job enqueued
-- with `notify_finished` sends, when it ends (succeeded, failed or cancelled), a notification
-- on the channel `pgqueue_finished` whose payload is a JSON object with its `id`, `queue`,
-- `kind` and `state`. Opt-in per job, because a NOTIFY's commit takes a lock that every other
-- notifying commit of the cluster waits for: the no-op hot path (thousands of completions a
-- second, batched per statement) must not pay it for jobs nobody listens to. The trigger's
-- WHEN tests one boolean of the row; other jobs cost nothing more.
--
-- `enqueue`, `cancel` and `retry` run as their owner (SECURITY DEFINER, with a fixed
-- search_path), so a role that may only enqueue and read job status needs USAGE on the schema,
-- EXECUTE on them and SELECT on pgqueue.job_status, not INSERT or UPDATE on the table (the
-- grants are in the README); their EXECUTE is revoked from PUBLIC: nobody gets them without a
-- grant. `enqueue_batch`, `cancel_job` and `retry_job` run as their caller, who needs the
-- table's privileges, as the Python `Queue` always has.

-- migrate:up
-- Whether every key of `keys` could name a key of pgqueue's (1-200 characters); true for none.
CREATE FUNCTION pgqueue.keys_fit(keys text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(bool_and(coalesce(length(k) BETWEEN 1 AND 200, false)), true)
    FROM unnest(keys) AS k
$$;

ALTER TABLE pgqueue.jobs
    ADD COLUMN notify_finished boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT jobs_fairness_weight_with_key
        CHECK (fairness_weight IS NULL OR fairness_key IS NOT NULL) NOT VALID,
    ADD CONSTRAINT jobs_budget_keys_with_cost
        CHECK (budget_keys IS NULL OR cost IS NOT NULL) NOT VALID,
    ADD CONSTRAINT jobs_budget_keys_length
        CHECK (pgqueue.keys_fit(budget_keys)) NOT VALID;
-- Validated apart: a scan that lets enqueues and claims go on (SHARE UPDATE EXCLUSIVE).
ALTER TABLE pgqueue.jobs VALIDATE CONSTRAINT jobs_fairness_weight_with_key;
ALTER TABLE pgqueue.jobs VALIDATE CONSTRAINT jobs_budget_keys_with_cost;
ALTER TABLE pgqueue.jobs VALIDATE CONSTRAINT jobs_budget_keys_length;
COMMENT ON COLUMN pgqueue.jobs.notify_finished IS
    'when the job ends, notify channel pgqueue_finished with {"id", "queue", "kind", "state"}';

-- The insert of every enqueue, Python's and SQL's: `jobs` is a JSON array with one object per
-- job, holding only the fields that differ from the defaults (`default_queue`,
-- `default_max_attempts`). Keyed rows go in in key order, so concurrent batches sharing keys
-- wait for each other in one global order instead of deadlocking; unkeyed rows keep the
-- caller's order (and ids). A duplicate idempotency key is skipped: the caller reads the
-- existing job. No NOTIFY here: the caller sends it inside its transaction or after its commit.
-- plpgsql, not sql: its plan is prepared once per session (a sql function's is planned again
-- at every call), so the indirection costs a function call and no planning.
CREATE FUNCTION pgqueue.enqueue_batch(jobs jsonb, default_queue text, default_max_attempts integer)
RETURNS TABLE (id bigint, idempotency_key text, run_at timestamptz, created_at timestamptz,
               queue text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO pgqueue.jobs AS j (queue, kind, payload, priority, run_at, max_attempts,
                                       timeout_s, idempotency_key, concurrency_key,
                                       concurrency_limit, rate_limit_key, fairness_key,
                                       fairness_weight, cost, budget_keys, notify_finished)
        SELECT coalesce(l.queue, default_queue), l.kind, coalesce(l.payload, '{}'),
               coalesce(l.priority, 0),
               coalesce(l.run_at, now() + make_interval(secs => coalesce(l.delay_s, 0))),
               coalesce(l.max_attempts, default_max_attempts), l.timeout_s, l.idempotency_key,
               l.concurrency_key, l.concurrency_limit, l.rate_limit_key, l.fairness_key,
               l.fairness_weight, l.cost, l.budget_keys, coalesce(l.notify_finished, false)
        FROM ROWS FROM (jsonb_to_recordset(jobs) AS (
                 queue text, kind text, payload jsonb, priority int, run_at timestamptz,
                 delay_s float8, max_attempts int, timeout_s float8, idempotency_key text,
                 concurrency_key text, concurrency_limit int, rate_limit_key text,
                 fairness_key text, fairness_weight real, cost numeric, budget_keys text[],
                 notify_finished boolean))
             WITH ORDINALITY AS l(queue, kind, payload, priority, run_at, delay_s, max_attempts,
                                  timeout_s, idempotency_key, concurrency_key,
                                  concurrency_limit, rate_limit_key, fairness_key,
                                  fairness_weight, cost, budget_keys, notify_finished, position)
        ORDER BY l.idempotency_key NULLS FIRST, l.position
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING j.id, j.idempotency_key, j.run_at, j.created_at, j.queue
    )
    SELECT i.id, i.idempotency_key, i.run_at, i.created_at, i.queue FROM inserted AS i;
END $$;

-- One job, from any language, in the caller's transaction: its id, or the existing job's for a
-- repeated idempotency key. The arguments are `Queue.enqueue`'s, by name; `delay` and
-- `timeout` are intervals. Its queue's workers are woken when the caller commits.
CREATE FUNCTION pgqueue.enqueue(
    kind text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    timeout interval DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    concurrency_limit integer DEFAULT NULL,
    rate_limit_key text DEFAULT NULL,
    fairness_key text DEFAULT NULL,
    fairness_weight real DEFAULT NULL,
    cost numeric DEFAULT NULL,
    budget_keys text[] DEFAULT NULL,
    notify_finished boolean DEFAULT false
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    job_id bigint;
BEGIN
    IF run_at IS NOT NULL AND delay IS NOT NULL THEN
        RAISE EXCEPTION 'give run_at or delay, not both' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Nulls stripped from the arguments (the batch's defaults apply), never from the payload.
    SELECT b.id INTO job_id
    FROM pgqueue.enqueue_batch(jsonb_build_array(jsonb_build_object('payload', payload)
         || jsonb_strip_nulls(jsonb_build_object(
             'kind', kind, 'queue', queue, 'priority', priority, 'run_at', run_at,
             'delay_s', extract(epoch FROM delay), 'max_attempts', max_attempts,
             'timeout_s', extract(epoch FROM timeout), 'idempotency_key', idempotency_key,
             'concurrency_key', concurrency_key, 'concurrency_limit', concurrency_limit,
             'rate_limit_key', rate_limit_key, 'fairness_key', fairness_key,
             'fairness_weight', fairness_weight, 'cost', cost, 'budget_keys', budget_keys,
             'notify_finished', notify_finished))),
         coalesce(enqueue.queue, 'default'), coalesce(enqueue.max_attempts, 3)) AS b;
    IF job_id IS NULL THEN
        -- A repeated key: the job that holds it (the insert waited for it to commit).
        SELECT j.id INTO job_id FROM pgqueue.jobs AS j
        WHERE j.idempotency_key = enqueue.idempotency_key;
        RETURN job_id;
    END IF;
    PERFORM pg_notify('pgqueue_jobs', coalesce(enqueue.queue, 'default'));
    RETURN job_id;
END $$;

-- A queued job is cancelled at once; a running one is flagged for its worker, which cancels
-- the handler within a heartbeat. The job as it is after the call; no row when there is no
-- such job or it has ended already (left as it is). What `Queue.cancel` runs.
CREATE FUNCTION pgqueue.cancel_job(job_id bigint) RETURNS SETOF pgqueue.jobs
LANGUAGE sql AS $$
    UPDATE pgqueue.jobs
    SET state = CASE WHEN state = 'queued' THEN 'cancelled'::pgqueue.job_state ELSE state END,
        finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
        last_error = CASE WHEN state = 'queued' THEN 'cancelled before it ran'
                          ELSE last_error END,
        cancel_requested_at = CASE WHEN state = 'running' THEN now()
                                   ELSE cancel_requested_at END
    WHERE id = job_id AND state IN ('queued', 'running')
    RETURNING *
$$;

-- A failed or cancelled job goes back to queued, runnable now, with a fresh attempt budget
-- (its last error stays, to show why it was retried); its queue's workers are woken (at the
-- caller's commit). No row: no such job, or one in another state. What `Queue.retry` runs.
CREATE FUNCTION pgqueue.retry_job(job_id bigint) RETURNS SETOF pgqueue.jobs
LANGUAGE sql AS $$
    WITH retried AS (
        UPDATE pgqueue.jobs
        SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
            worker_id = NULL, cancel_requested_at = NULL, result = NULL
        WHERE id = job_id AND state IN ('failed', 'cancelled')
        RETURNING *
    ), woken AS (
        SELECT count(pg_notify('pgqueue_jobs', r.queue)) FROM retried AS r
    )
    SELECT r.* FROM retried AS r, woken
$$;

CREATE FUNCTION pgqueue.cancel(job_id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) > 0 FROM pgqueue.cancel_job(job_id)
$$;

CREATE FUNCTION pgqueue.retry(job_id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) > 0 FROM pgqueue.retry_job(job_id)
$$;

-- The three that run as their owner; the others run as their caller, who needs the table's
-- privileges as before (what the Python `Queue` calls: an application's role keeps working).
REVOKE EXECUTE ON FUNCTION
    pgqueue.enqueue(text, jsonb, text, integer, timestamptz, interval, integer, interval, text,
                    text, integer, text, text, real, numeric, text[], boolean),
    pgqueue.cancel(bigint), pgqueue.retry(bigint)
FROM PUBLIC;

CREATE FUNCTION pgqueue.notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgqueue_finished', json_build_object(
        'id', NEW.id, 'queue', NEW.queue, 'kind', NEW.kind, 'state', NEW.state)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_finished
    AFTER UPDATE OF state ON pgqueue.jobs FOR EACH ROW
    WHEN (NEW.notify_finished AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION pgqueue.notify_finished();

-- migrate:down
DROP TRIGGER jobs_notify_finished ON pgqueue.jobs;
DROP FUNCTION pgqueue.notify_finished();
DROP FUNCTION pgqueue.retry(bigint);
DROP FUNCTION pgqueue.cancel(bigint);
DROP FUNCTION pgqueue.retry_job(bigint);
DROP FUNCTION pgqueue.cancel_job(bigint);
DROP FUNCTION pgqueue.enqueue(text, jsonb, text, integer, timestamptz, interval, integer,
                              interval, text, text, integer, text, text, real, numeric, text[],
                              boolean);
DROP FUNCTION pgqueue.enqueue_batch(jsonb, text, integer);
ALTER TABLE pgqueue.jobs
    DROP CONSTRAINT jobs_budget_keys_length,
    DROP CONSTRAINT jobs_budget_keys_with_cost,
    DROP CONSTRAINT jobs_fairness_weight_with_key,
    DROP COLUMN notify_finished;
DROP FUNCTION pgqueue.keys_fit(text[]);
