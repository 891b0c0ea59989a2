"""Statements of administration: get, cancel, list, retry, pause and resume, queue stats."""

from __future__ import annotations

# -- get_job: one job by id
GET_JOB = """
SELECT * FROM pgqueue.jobs WHERE id = $1
"""

# -- get_jobs: the jobs of ids $1 that exist, newest first
GET_JOBS = """
SELECT * FROM pgqueue.jobs WHERE id = ANY ($1::bigint[]) ORDER BY id DESC
"""

# -- cancel_job: a queued job is cancelled at once; a running one is flagged for its worker,
# -- which cancels the handler within a heartbeat. Terminal jobs are left as they are. The
# -- function is the SQL interface's pgqueue.cancel too (schema version 11).
CANCEL_JOB = """
SELECT * FROM pgqueue.cancel_job($1)
"""

# -- queue_stats: one row per queue
QUEUE_STATS = """
SELECT queue, waiting, delayed, active, completed, failed, cancelled
FROM pgqueue.queue_stats ORDER BY queue
"""

# -- list_jobs: a page of jobs, newest first, below the id $1 (keyset pagination: the page after
# -- one ending at id N asks for ids below N, so it costs the same at any depth and a job
# -- enqueued meanwhile never shifts the next page). Each filter is optional (NULL: any): queue
# -- $2, state $3, kind $4, and payload field $5 being one of $6; $7 rows at most. A backward
# -- scan of the primary key, stopping after $7 matches: 0.5-2 ms on 1M rows, at any depth; a
# -- filter matching few rows reads further (a kind on 1% of them: 2-9 ms; a payload field on
# -- 0.02%: 40-140 ms).
LIST_JOBS = """
SELECT * FROM pgqueue.jobs
WHERE id < $1
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::pgqueue.job_state IS NULL OR state = $3)
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR payload ->> $5 = ANY ($6::text[]))
ORDER BY id DESC
LIMIT $7
"""

# -- list_jobs_of_kind: LIST_JOBS for kind $4 (not NULL): a backward scan of jobs_kind_idx
# -- (kind, id), stopping after $7 matches, where LIST_JOBS would read the whole table for a
# -- kind on few (or no) rows. `kind = $4` alone, with no `$4 IS NULL OR`, so that a generic
# -- plan (the prepared statement's sixth run on) can use the index too. Same parameters.
LIST_JOBS_OF_KIND = """
SELECT * FROM pgqueue.jobs
WHERE kind = $4 AND id < $1
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::pgqueue.job_state IS NULL OR state = $3)
  AND ($5::text IS NULL OR payload ->> $5 = ANY ($6::text[]))
ORDER BY kind DESC, id DESC
LIMIT $7
"""

# -- list_jobs_ended_badly: LIST_JOBS for $3 'failed' or 'cancelled', the states one looks for
# -- and that few rows are in: the literal IN list lets even a generic plan use the partial
# -- index jobs_ended_badly_idx, where LIST_JOBS would scan every succeeded row to find none
# -- (1M rows, no cancelled job: 266 ms; here well under 1 ms). Same parameters.
LIST_JOBS_ENDED_BADLY = """
SELECT * FROM pgqueue.jobs
WHERE id < $1 AND state IN ('failed', 'cancelled')
  AND ($2::text IS NULL OR queue = $2)
  AND state = $3::pgqueue.job_state
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR payload ->> $5 = ANY ($6::text[]))
ORDER BY id DESC
LIMIT $7
"""

# -- retry_job: a failed or cancelled job goes back to queued, runnable now, with a fresh attempt
# -- budget (its last error stays, to show why it was retried); its queue's workers are woken.
# -- No row: the job does not exist or is in another state (the caller reads which). The
# -- function is the SQL interface's pgqueue.retry too (schema version 11).
RETRY_JOB = """
SELECT * FROM pgqueue.retry_job($1)
"""

# -- pause_queue: no claim takes jobs of queue $1 from now on (a no-op when paused already)
PAUSE_QUEUE = """
INSERT INTO pgqueue.paused_queues (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING
"""

# -- resume_queue: claims take jobs of queue $1 again; its workers are woken at once rather
# -- than at their next poll
RESUME_QUEUE = """
WITH resumed AS (
    DELETE FROM pgqueue.paused_queues WHERE queue = $1 RETURNING queue
)
SELECT pg_notify('pgqueue_jobs', $1) FROM (SELECT) AS one
"""

# -- queue_overview: per queue (any queue with jobs, counters or a pause), whether it is paused,
# -- the counts of queue_stats, how long its oldest runnable job has waited (since its run_at)
# -- and how many of its jobs finished in the last 5 minutes (the dated counters, not the jobs).
# -- Joins of per-queue aggregates, not a subquery per queue: the planner counts an empty,
# -- never-analyzed paused_queues as 1,200 rows, so subqueries per row were costed at 500,000+
# -- with a 5,000-job backlog, which turned on JIT compilation: 1.5 s a call instead of 13-20 ms
# -- (1M jobs; the dashboard reads this every 2 s).
QUEUE_OVERVIEW = """
WITH stats AS MATERIALIZED (
    SELECT * FROM pgqueue.queue_stats
), oldest AS (
    SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS oldest_waiting_s
    FROM pgqueue.jobs
    WHERE state = 'queued' AND run_at <= now()
    GROUP BY queue
), recent AS (
    SELECT queue, sum(n)::bigint AS finished_last_5m
    FROM pgqueue.finished_counts
    WHERE minute >= date_trunc('minute', now()) - interval '4 minutes'
    GROUP BY queue
)
SELECT coalesce(s.queue, p.queue) AS queue, p.paused_at,
       coalesce(s.waiting, 0) AS waiting, coalesce(s.delayed, 0) AS delayed,
       coalesce(s.active, 0) AS active, coalesce(s.completed, 0) AS completed,
       coalesce(s.failed, 0) AS failed, coalesce(s.cancelled, 0) AS cancelled,
       o.oldest_waiting_s, coalesce(r.finished_last_5m, 0) AS finished_last_5m
FROM stats AS s
FULL JOIN pgqueue.paused_queues AS p ON p.queue = s.queue
LEFT JOIN oldest AS o ON o.queue = coalesce(s.queue, p.queue)
LEFT JOIN recent AS r ON r.queue = coalesce(s.queue, p.queue)
ORDER BY 1
"""

# -- finished_per_minute: jobs finished in each of the last $2 minutes (the current one last),
# -- by outcome, of queue $1 (NULL: all queues); minutes without any read as zeros
FINISHED_PER_MINUTE = """
SELECT m.minute,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'succeeded'), 0)::bigint AS succeeded,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'failed'), 0)::bigint AS failed,
       coalesce(sum(f.n) FILTER (WHERE f.state = 'cancelled'), 0)::bigint AS cancelled
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $2 - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN pgqueue.finished_counts AS f
       ON f.minute = m.minute AND ($1::text IS NULL OR f.queue = $1)
GROUP BY m.minute
ORDER BY m.minute
"""

# -- waiting_jobs: runnable jobs of the given queues (the backlog warning)
COUNT_WAITING = """
SELECT count(*) FROM pgqueue.jobs
WHERE state = 'queued' AND queue = ANY($1::text[]) AND run_at <= now()
"""
