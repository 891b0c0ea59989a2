"""Statements of the operator's command line beyond admin.py: listing by payload containment,
purging finished jobs by age (retrying every failed job of a filter is `bulk.RETRY_MATCHING`,
which the dashboard runs too)."""

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
