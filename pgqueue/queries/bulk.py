"""Statements on every job of a filter at once: a bounded payload search, the count a bulk
action would change, bulk retry and bulk cancel.

A filter is four optional parameters (NULL: any): queue $1, states $2 (`job_state[]`, the
states the action may change that the filter's state allows), kind $3 and a payload
containing the JSON $4 (jsonb `@>`: `{"project_id": "p1"}` matches any payload with that
field and value, nested objects and arrays included). A bulk action also stops at id $5, the
newest job its confirmation counted, so a job enqueued after the operator saw the count is
left alone.

Each action's statement reads only the states it changes, by a literal state list that a
partial index holds (`jobs_ended_badly_idx` for failed and cancelled, `jobs_claim_idx` for
queued, `jobs_lease_expiry_idx` for running): their cost follows the jobs in those states,
never the finished history. No index holds payloads (a GIN index would cost every enqueue),
so the listing's payload search is bounded by an id window instead.
"""

from __future__ import annotations

# -- job_id_ceiling: one above the newest job's id (1 with no job): where the first window of a
# -- payload search starts
JOB_ID_CEILING = """
SELECT coalesce(max(id), 0) + 1 AS ceiling FROM pgqueue.jobs
"""

# -- list_jobs_containing: the newest $6 jobs whose payload contains $4, of queue $1, state $2
# -- and kind $3 (NULL: any), with ids below $5 and not below $7: one backward scan of the
# -- primary key over that window at most, the bound of a search that matches few jobs or none
LIST_JOBS_CONTAINING = """
SELECT * FROM pgqueue.jobs
WHERE id < $5 AND id >= $7
  AND ($1::text IS NULL OR queue = $1)
  AND ($2::pgqueue.job_state IS NULL OR state = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND payload @> $4::jsonb
ORDER BY id DESC
LIMIT $6
"""

# -- count_retryable: how many failed or cancelled jobs of the filter (states $2) a bulk retry
# -- would queue again, and the newest one's id (NULL when none): what the confirmation shows
COUNT_RETRYABLE = """
SELECT count(*) AS jobs, max(id) AS newest
FROM pgqueue.jobs
WHERE state IN ('failed', 'cancelled') AND state = ANY ($2::pgqueue.job_state[])
  AND ($1::text IS NULL OR queue = $1)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::jsonb IS NULL OR payload @> $4::jsonb)
"""

# -- retry_matching: every failed or cancelled job of the filter (states $2), up to id $5, back
# -- to queued, runnable now, with a fresh attempt budget, as RETRY_JOB does one; their queues'
# -- workers are woken once per queue. Returns how many.
RETRY_MATCHING = """
WITH retried AS (
    UPDATE pgqueue.jobs
    SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, worker_id = NULL,
        cancel_requested_at = NULL, result = NULL
    WHERE state IN ('failed', 'cancelled') AND state = ANY ($2::pgqueue.job_state[])
      AND id <= $5
      AND ($1::text IS NULL OR queue = $1)
      AND ($3::text IS NULL OR kind = $3)
      AND ($4::jsonb IS NULL OR payload @> $4::jsonb)
    RETURNING queue
), woken AS (
    SELECT count(pg_notify('pgqueue_jobs', q.queue)) AS queues
    FROM (SELECT DISTINCT queue FROM retried) AS q
)
SELECT (SELECT count(*) FROM retried) AS jobs, woken.queues FROM woken
"""

# -- count_cancellable: how many queued jobs, and running ones not already asked to stop, of
# -- the filter (states $2) a bulk cancel would change, and the newest one's id (NULL: none)
COUNT_CANCELLABLE = """
SELECT count(*) AS jobs, max(id) AS newest
FROM pgqueue.jobs
WHERE (state = 'queued'
       OR (state = 'running' AND lease_expires_at IS NOT NULL AND cancel_requested_at IS NULL))
  AND state = ANY ($2::pgqueue.job_state[])
  AND ($1::text IS NULL OR queue = $1)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::jsonb IS NULL OR payload @> $4::jsonb)
"""

# -- cancel_matching: every job COUNT_CANCELLABLE counts, up to id $5, cancelled as CANCEL_JOB
# -- cancels one: a queued job at once, a running one flagged for its worker (which stops it
# -- within a heartbeat). Returns how many of each.
CANCEL_MATCHING = """
WITH changed AS (
    UPDATE pgqueue.jobs
    SET state = CASE WHEN state = 'queued' THEN 'cancelled'::pgqueue.job_state ELSE state END,
        finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
        last_error = CASE WHEN state = 'queued' THEN 'cancelled before it ran'
                          ELSE last_error END,
        cancel_requested_at = CASE WHEN state = 'running' THEN now()
                                   ELSE cancel_requested_at END
    WHERE (state = 'queued'
           OR (state = 'running' AND lease_expires_at IS NOT NULL
               AND cancel_requested_at IS NULL))
      AND state = ANY ($2::pgqueue.job_state[])
      AND id <= $5
      AND ($1::text IS NULL OR queue = $1)
      AND ($3::text IS NULL OR kind = $3)
      AND ($4::jsonb IS NULL OR payload @> $4::jsonb)
    RETURNING state
)
SELECT count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE state = 'running') AS stopping
FROM changed
"""
