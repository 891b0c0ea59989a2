"""Statements of the operator's command line beyond admin.py: listing by payload containment,
retrying every failed job of a filter, purging finished jobs by age."""

from __future__ import annotations

# -- list_jobs_matching: the newest $6 jobs, each filter optional (NULL: any): queue $1, state
# -- $2, kind $3, and a payload containing the JSON $4 (jsonb `@>`, so `{"project_id": "p1"}`
# -- matches any payload with that field and value), below id $5 (the next page)
LIST_JOBS_MATCHING = """
SELECT * FROM pgqueue.jobs
WHERE id < $5
  AND ($1::text IS NULL OR queue = $1)
  AND ($2::pgqueue.job_state IS NULL OR state = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::jsonb IS NULL OR payload @> $4::jsonb)
ORDER BY id DESC
LIMIT $6
"""

# -- retry_ended_badly: every failed (and, when $3, cancelled) job of queue $1 and kind $2
# -- (NULL: any) back to queued, runnable now, with a fresh attempt budget, as RETRY_JOB does
# -- one; their queues' workers are woken once per queue. The literal state list lets the
# -- partial index jobs_ended_badly_idx find them. Returns the ids.
RETRY_ENDED_BADLY = """
WITH retried AS (
    UPDATE pgqueue.jobs
    SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, worker_id = NULL,
        cancel_requested_at = NULL, result = NULL
    WHERE state IN ('failed', 'cancelled')
      AND (state = 'failed' OR $3)
      AND ($1::text IS NULL OR queue = $1)
      AND ($2::text IS NULL OR kind = $2)
    RETURNING id, queue
), woken AS (
    SELECT pg_notify('pgqueue_jobs', queue) FROM (SELECT DISTINCT queue FROM retried) AS q
)
SELECT id FROM retried WHERE (SELECT count(*) FROM woken) >= 0
"""
