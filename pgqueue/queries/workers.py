"""Statements of the workers' presence (schema v12: pgqueue.workers)."""

from __future__ import annotations

# -- beat_worker: worker $1 (host $2, pid $3, queues $4, $5 slots, $6 of them in use) is alive
# -- and counts as gone once $7 seconds pass without another beat
BEAT_WORKER = """
INSERT INTO pgqueue.workers AS w
    (id, host, pid, queues, concurrency, running, heartbeat_at, expires_at)
VALUES ($1, $2, $3, $4::text[], $5, $6, now(), now() + make_interval(secs => $7))
ON CONFLICT (id) DO UPDATE
SET running = EXCLUDED.running, queues = EXCLUDED.queues, concurrency = EXCLUDED.concurrency,
    heartbeat_at = now(), expires_at = EXCLUDED.expires_at
"""

# -- remove_worker: worker $1 exits cleanly
REMOVE_WORKER = """
DELETE FROM pgqueue.workers WHERE id = $1
"""

# -- prune_workers: rows of workers gone (killed, cut off) for more than $1 seconds
PRUNE_WORKERS = """
DELETE FROM pgqueue.workers WHERE expires_at < now() - make_interval(secs => $1)
"""

# -- list_workers: every worker row, newest beat first, each saying whether it is stale (its
# -- worker missed its beats: killed or cut off) by the database's clock
LIST_WORKERS = """
SELECT id, host, pid, queues, concurrency, running, started_at, heartbeat_at, expires_at,
       expires_at < now() AS stale
FROM pgqueue.workers
ORDER BY stale, heartbeat_at DESC, id
"""
