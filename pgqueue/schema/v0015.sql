-- pgqueue schema version 15: claims start past the jobs a held snapshot keeps dead.
--
-- A claim scanned jobs_claim_idx from its front. Every job claimed leaves its 'queued'
-- version's entry there, pointing at a heap tuple that is dead but, while any transaction
-- holds an older snapshot (a 120 s analytics query), neither removable by VACUUM nor marked
-- dead by the scans that pass it. Those entries sit exactly at the front (the oldest run_at),
-- so each claim visited every job claimed since the snapshot was taken: at 5,000 jobs/s the
-- worker fell to 0.33x its rate and the backlog grew without bound.
--
-- claim_marks keeps, per queue and priority, a position (run_at, id) no runnable job of theirs
-- lies before; the claim scans each priority from its mark (a row comparison, so the btree
-- starts there). The mark moves forward at most twice a second (few row versions even under
-- a held snapshot, so it never becomes a hot row), and it is kept exact:
-- - an enqueue or a requeue that lands a job before its mark lowers the mark (rare: a job
--   with an old run_at, a higher priority arriving, a fair turn at the queue's head);
-- - the advance (ADVANCE_CLAIM_MARKS) moves a mark only to the first queued job it sees, and
--   never past `horizon_at - claim_mark_lag()`, where horizon_at is when the previous advance
--   read the transaction horizon, and only when every transaction that held an xid then has
--   ended. An enqueue still in flight therefore got its xid after horizon_at, and its job's
--   run_at is at least (its trigger's clock - lag) >= horizon_at - lag: the advance cannot pass
--   it. A job older than that ("late": run_at before clock - lag, e.g. an enqueue inside a
--   long transaction, an explicit past run_at) share-locks its mark first, which makes the
--   advance (FOR NO KEY UPDATE SKIP LOCKED) leave that mark alone until it commits, and then
--   compares with the latest mark.
-- A claim that rolls back leaves its jobs queued where they were, and the advance never
-- passes a job some transaction still sees as queued. Read-only transactions hold no xid,
-- so a held analytics snapshot does not stop the marks; a transaction that wrote and stays
-- open does (the claims then scan from where the marks stopped: today's cost, no worse).

-- migrate:up
CREATE TABLE pgqueue.claim_marks (
    queue      text NOT NULL,
    priority   integer NOT NULL,
    run_at     timestamptz NOT NULL,
    id         bigint NOT NULL,
    -- the next xid when the mark last moved forward (or was created), and that statement's
    -- start: transactions still running with an xid >= horizon started after horizon_at
    horizon    xid8 NOT NULL DEFAULT pg_snapshot_xmax(pg_current_snapshot()),
    horizon_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (queue, priority)
) WITH (fillfactor = 20);  -- room on the page for the HOT versions an advance leaves
COMMENT ON TABLE pgqueue.claim_marks IS
    'per queue and priority: no runnable job lies before (run_at, id); claims scan from it';

-- How far behind its trigger's clock a job's run_at may be and still count as on time.
CREATE FUNCTION pgqueue.claim_mark_lag() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '500 milliseconds' $$;

-- Jobs an INSERT queued: share-lock the marks of the late ones (see above), then create or
-- lower the marks they land before. The check runs before any write, so an enqueue behind
-- its mark (nearly all) reads one index entry and writes nothing.
CREATE FUNCTION pgqueue.keep_claim_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM pgqueue.claim_marks AS c
    WHERE (c.queue, c.priority) IN (
        SELECT n.queue, n.priority FROM new_rows AS n
        WHERE n.state = 'queued' AND n.run_at < clock_timestamp() - pgqueue.claim_mark_lag())
    ORDER BY c.queue, c.priority
    FOR SHARE OF c;
    INSERT INTO pgqueue.claim_marks AS m (queue, priority, run_at, id)
    SELECT l.queue, l.priority, l.run_at, l.id
    FROM (SELECT DISTINCT ON (queue, priority) queue, priority, run_at, id
          FROM new_rows WHERE state = 'queued'
          ORDER BY queue, priority, run_at, id) AS l
    WHERE NOT EXISTS (
        SELECT 1 FROM pgqueue.claim_marks AS c
        WHERE c.queue = l.queue AND c.priority = l.priority
          AND (c.run_at, c.id) <= (l.run_at, l.id))
    ORDER BY l.queue, l.priority
    ON CONFLICT (queue, priority) DO UPDATE
    SET run_at = excluded.run_at, id = excluded.id
    WHERE (excluded.run_at, excluded.id) < (m.run_at, m.id);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_keep_claim_marks
    AFTER INSERT ON pgqueue.jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.keep_claim_marks();

-- A job an UPDATE (re)queued or moved within the queue: the same, for one row.
CREATE FUNCTION pgqueue.keep_claim_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.run_at < clock_timestamp() - pgqueue.claim_mark_lag() THEN
        PERFORM 1 FROM pgqueue.claim_marks
        WHERE queue = NEW.queue AND priority = NEW.priority
        FOR SHARE;
    END IF;
    INSERT INTO pgqueue.claim_marks AS m (queue, priority, run_at, id)
    SELECT NEW.queue, NEW.priority, NEW.run_at, NEW.id
    WHERE NOT EXISTS (
        SELECT 1 FROM pgqueue.claim_marks AS c
        WHERE c.queue = NEW.queue AND c.priority = NEW.priority
          AND (c.run_at, c.id) <= (NEW.run_at, NEW.id))
    ON CONFLICT (queue, priority) DO UPDATE
    SET run_at = excluded.run_at, id = excluded.id
    WHERE (excluded.run_at, excluded.id) < (m.run_at, m.id);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_keep_claim_mark
    AFTER UPDATE ON pgqueue.jobs FOR EACH ROW
    WHEN (NEW.state = 'queued'
          AND (OLD.state <> 'queued' OR NEW.queue <> OLD.queue OR NEW.priority <> OLD.priority
               OR NEW.run_at < OLD.run_at OR NEW.id <> OLD.id))
    EXECUTE FUNCTION pgqueue.keep_claim_mark();

CREATE FUNCTION pgqueue.truncate_claim_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgqueue.claim_marks;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_truncate_claim_marks
    AFTER TRUNCATE ON pgqueue.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.truncate_claim_marks();

-- The jobs queued at the upgrade: every (queue, priority) of theirs starts at the front. A
-- job requeued later creates its mark through the trigger.
INSERT INTO pgqueue.claim_marks (queue, priority, run_at, id)
SELECT DISTINCT queue, priority, '-infinity'::timestamptz, 0
FROM pgqueue.jobs WHERE state = 'queued';

-- A fair turn places a job at its queue's head, the first queued job of its priority: found
-- from the mark, not by walking the dead entries before it.
CREATE OR REPLACE FUNCTION pgqueue.take_fair_turn() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head timestamptz;
    mark_run_at timestamptz;
    mark_id bigint;
    head_us float8;
    turn float8;
    start float8;
    turn_us CONSTANT float8 := 10;  -- one turn of a key of weight 1, in microseconds
    burst_turns CONSTANT float8 := 3;  -- jobs an idle key places within its first turn
BEGIN
    IF NEW.run_at > now() THEN
        RETURN NEW;  -- delayed on purpose: it runs when asked, not in turn
    END IF;
    -- The queue's head: its oldest job that may run now (the next to be served), or now().
    SELECT m.run_at, m.id INTO mark_run_at, mark_id
    FROM pgqueue.claim_marks AS m WHERE m.queue = NEW.queue AND m.priority = NEW.priority;
    SELECT least(min(j.run_at), now()) INTO head
    FROM (SELECT run_at FROM pgqueue.jobs
          WHERE state = 'queued' AND queue = NEW.queue AND priority = NEW.priority
            AND (run_at, id) >= (coalesce(mark_run_at, '-infinity'), coalesce(mark_id, 0))
          ORDER BY run_at, id LIMIT 1) AS j;
    head_us := extract(epoch FROM coalesce(head, now())) * 1e6;
    turn := turn_us / coalesce(NEW.fairness_weight, 1);
    INSERT INTO pgqueue.fair_turns AS f (queue, key, tag_us, burst_until_us, start_us)
    VALUES (NEW.queue, NEW.fairness_key, head_us + turn / burst_turns, head_us + turn, head_us)
    ON CONFLICT (queue, key) DO UPDATE
    SET start_us = CASE WHEN f.tag_us <= head_us THEN head_us ELSE f.tag_us END,
        burst_until_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn
                              ELSE f.burst_until_us END,
        tag_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn / burst_turns
                      WHEN f.tag_us + turn / burst_turns <= f.burst_until_us
                          THEN f.tag_us + turn / burst_turns
                      ELSE f.tag_us + turn END,
        updated_at = now()
    RETURNING f.start_us INTO start;
    NEW.run_at := to_timestamp(start / 1e6);
    RETURN NEW;
END $$;

-- migrate:down
-- Version 8's fair turn, as it was.
CREATE OR REPLACE FUNCTION pgqueue.take_fair_turn() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head timestamptz;
    head_us float8;
    turn float8;
    start float8;
    turn_us CONSTANT float8 := 10;  -- one turn of a key of weight 1, in microseconds
    burst_turns CONSTANT float8 := 3;  -- jobs an idle key places within its first turn
BEGIN
    IF NEW.run_at > now() THEN
        RETURN NEW;  -- delayed on purpose: it runs when asked, not in turn
    END IF;
    -- The queue's head: its oldest job that may run now (the next to be served), or now().
    SELECT least(min(j.run_at), now()) INTO head
    FROM (SELECT run_at FROM pgqueue.jobs
          WHERE state = 'queued' AND queue = NEW.queue AND priority = NEW.priority
          ORDER BY run_at LIMIT 1) AS j;
    head_us := extract(epoch FROM coalesce(head, now())) * 1e6;
    turn := turn_us / coalesce(NEW.fairness_weight, 1);
    INSERT INTO pgqueue.fair_turns AS f (queue, key, tag_us, burst_until_us, start_us)
    VALUES (NEW.queue, NEW.fairness_key, head_us + turn / burst_turns, head_us + turn, head_us)
    ON CONFLICT (queue, key) DO UPDATE
    SET start_us = CASE WHEN f.tag_us <= head_us THEN head_us ELSE f.tag_us END,
        burst_until_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn
                              ELSE f.burst_until_us END,
        tag_us = CASE WHEN f.tag_us <= head_us THEN head_us + turn / burst_turns
                      WHEN f.tag_us + turn / burst_turns <= f.burst_until_us
                          THEN f.tag_us + turn / burst_turns
                      ELSE f.tag_us + turn END,
        updated_at = now()
    RETURNING f.start_us INTO start;
    NEW.run_at := to_timestamp(start / 1e6);
    RETURN NEW;
END $$;
DROP TRIGGER jobs_truncate_claim_marks ON pgqueue.jobs;
DROP FUNCTION pgqueue.truncate_claim_marks();
DROP TRIGGER jobs_keep_claim_mark ON pgqueue.jobs;
DROP FUNCTION pgqueue.keep_claim_mark();
DROP TRIGGER jobs_keep_claim_marks ON pgqueue.jobs;
DROP FUNCTION pgqueue.keep_claim_marks();
DROP FUNCTION pgqueue.claim_mark_lag();
DROP TABLE pgqueue.claim_marks;
