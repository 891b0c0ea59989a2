"""Statements of a job's attempt history (schema v12: pgqueue.attempts)."""

from __future__ import annotations

# -- list_attempts: the attempts of job $1, oldest first: the ended ones (rows the trigger
# -- jobs_record_attempt and the success statements wrote) and then, read from the job row,
# -- its current attempt while it runs, or the success of a first attempt. The success
# -- statements write a row only for a job that had attempts before: for the rest (nearly
# -- every job) the job row holds everything the row would, and the extra insert on the
# -- completion path cost a third of the no-op throughput (`--only throughput`, concurrency
# -- 50: 5,900-7,800 jobs/s against 10,100 without it).
LIST_ATTEMPTS = """
SELECT a.attempt, a.worker_id, a.started_at, a.finished_at, a.outcome, a.error
FROM pgqueue.attempts AS a
WHERE a.job_id = $1
UNION ALL
SELECT j.attempts, j.worker_id, j.started_at,
       CASE WHEN j.state = 'succeeded' THEN j.finished_at END,
       CASE WHEN j.state = 'succeeded' THEN 'succeeded' ELSE 'running' END, NULL
FROM pgqueue.jobs AS j
WHERE j.id = $1
  AND (j.state = 'running' OR (j.state = 'succeeded' AND j.attempts = 1))
ORDER BY 4 NULLS LAST, 3
"""
