"""Statements of a job's attempt history (schema v12: pgqueue.attempts)."""

from __future__ import annotations

# -- list_attempts: the attempts of job $1, oldest first: the ended ones (rows the trigger
# -- jobs_record_attempt wrote) and then, while the job runs, its current attempt, read from
# -- the job row (an attempt has a row of its own only once it ended).
LIST_ATTEMPTS = """
SELECT a.attempt, a.worker_id, a.started_at, a.finished_at, a.outcome, a.error
FROM pgqueue.attempts AS a
WHERE a.job_id = $1
UNION ALL
SELECT j.attempts, j.worker_id, j.started_at, NULL, 'running', NULL
FROM pgqueue.jobs AS j
WHERE j.id = $1 AND j.state = 'running'
ORDER BY 4 NULLS LAST, 3
"""
