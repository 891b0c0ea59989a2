"""Statements a metrics scrape reads."""

from __future__ import annotations

# -- settled_before: every job with finished_at before this instant has committed (or never
# -- will): finished_at is its transaction's now(), so a transaction still open can only write
# -- finished_at >= its xact_start. Taken before the read below, in a statement of its own, so
# -- that the read's snapshot is later than this one: whatever committed in between is seen.
SETTLED_BEFORE = """
SELECT greatest(least(clock_timestamp(), min(xact_start)),
                clock_timestamp() - make_interval(secs => $1)) AS settled_before
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""

# -- finished_between: the jobs that finished in [$1, $2), per queue, kind, state and duration
# -- bucket ($3: the buckets' upper bounds; width_bucket gives 0 below the first, n above the
# -- last, NULL for a job cancelled before it ever started). Served by jobs_finished_at_idx:
# -- it reads only the rows that finished since the last scrape, never the whole table.
FINISHED_BETWEEN = """
SELECT queue, kind, state::text AS state,
       width_bucket(extract(epoch FROM finished_at - started_at)::float8, $3::float8[]) AS bucket,
       count(*) AS jobs,
       coalesce(sum(extract(epoch FROM finished_at - started_at)::float8), 0) AS seconds
FROM pgqueue.jobs
WHERE finished_at >= $1 AND finished_at < $2
GROUP BY 1, 2, 3, 4
"""
