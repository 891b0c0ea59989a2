"""Statements of the claim marks (schema v15): where claims start, moved past claimed jobs."""

from __future__ import annotations

# -- lock_claim_marks: the marks of the queues $1 that may move forward now: their last move
# -- is $2 seconds old, and every transaction that held an xid then has ended (schema v15).
# -- SKIP LOCKED passes the marks a late enqueue holds (it may land before where the advance
# -- would go) and those another worker is advancing. Run in ADVANCE_CLAIM_MARKS's transaction,
# -- before it: the advance's own snapshot, taken after these locks, sees every job whose
# -- enqueue held one of them.
LOCK_CLAIM_MARKS = """
SELECT queue, priority FROM pgqueue.claim_marks
WHERE queue = ANY ($1::text[])
  AND horizon_at < statement_timestamp() - make_interval(secs => $2)
  AND horizon <= pg_snapshot_xmin(pg_current_snapshot())
ORDER BY queue, priority
FOR NO KEY UPDATE SKIP LOCKED
"""

# -- advance_claim_marks: move the locked marks ($1 queues, $2 priorities, pairwise) to the
# -- first job of theirs still queued as this statement sees it (one still being claimed
# -- counts), but never past the previous move's horizon_at - claim_mark_lag(): an enqueue
# -- in flight started after that and its job lies after it (schema v15). With $3, the search
# -- starts at the index's front rather than at the mark: a periodic check that nothing was
# -- left behind (it only ever lowers a mark that was wrong). Records the next xid and this
# -- statement's start for the next move.
ADVANCE_CLAIM_MARKS = """
UPDATE pgqueue.claim_marks AS m
SET (run_at, id) = (
        SELECT CASE WHEN f.run_at < b.bound THEN f.run_at ELSE b.bound END,
               CASE WHEN f.run_at < b.bound THEN f.id ELSE 0 END
        FROM (SELECT m.horizon_at - pgqueue.claim_mark_lag() AS bound) AS b
        LEFT JOIN LATERAL (
            SELECT j.run_at, j.id FROM pgqueue.jobs AS j
            WHERE j.state = 'queued' AND j.queue = m.queue AND j.priority = m.priority
              AND (j.run_at, j.id) >= (CASE WHEN $3 THEN '-infinity' ELSE m.run_at END,
                                       CASE WHEN $3 THEN 0 ELSE m.id END)
            ORDER BY j.run_at, j.id
            LIMIT 1
        ) AS f ON true),
    horizon = pg_snapshot_xmax(pg_current_snapshot()),
    horizon_at = statement_timestamp()
FROM unnest($1::text[], $2::int[]) AS l(queue, priority)
WHERE m.queue = l.queue AND m.priority = l.priority
"""
