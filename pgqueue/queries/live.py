"""What the dashboard reads again and again: the states of the jobs a page lists, and the
duration percentiles of each kind's recent jobs."""

from __future__ import annotations

# -- job_states: the state of each job of $1 that exists (what a page polls for the jobs it
# -- lists): a primary-key lookup per id, no payload or result read
JOB_STATES = """
SELECT id, state, attempts, max_attempts, cancel_requested_at IS NOT NULL AS cancelling,
       finished_at
FROM pgqueue.jobs
WHERE id = ANY ($1::bigint[])
"""

# -- kind_durations: per kind, the p50, p95 and p99 of the run time (its last attempt's start
# -- to its end) of the jobs that succeeded in the last $1 seconds, over at most the $2 that
# -- finished last: a range of jobs_finished_at_idx, bounded whatever the throughput
KIND_DURATIONS = """
SELECT kind, count(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY run_s) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) AS p95_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY run_s) AS p99_s,
       max(run_s) AS max_s
FROM (
    SELECT kind, state, extract(epoch FROM finished_at - started_at)::float8 AS run_s
    FROM pgqueue.jobs
    WHERE finished_at IS NOT NULL AND finished_at > now() - make_interval(secs => $1)
    ORDER BY finished_at DESC
    LIMIT $2
) AS recent
WHERE state = 'succeeded' AND run_s IS NOT NULL
GROUP BY kind
ORDER BY kind
"""
