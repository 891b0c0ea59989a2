"""Statements of periodic jobs' ticks and the database's clock."""

from __future__ import annotations

# -- database_now: the database's clock (the scheduler's time)
DATABASE_NOW = """
SELECT now()
"""

# -- insert_schedule: a schedule seen for the first time starts at tick $5 without a job
INSERT_SCHEDULE = """
INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO NOTHING
RETURNING name
"""

# -- advance_schedule: move a schedule that is behind to tick $5 (no row: someone else did)
ADVANCE_SCHEDULE = """
UPDATE pgqueue.schedules
SET kind = $2, queue = $3, schedule = $4, last_tick = $5, next_tick = $6, updated_at = now(),
    seen_at = now()
WHERE name = $1 AND last_tick < $5
RETURNING name
"""

# -- set_schedule_job: the job a schedule's last tick became
SET_SCHEDULE_JOB = """
UPDATE pgqueue.schedules SET last_job_id = $2 WHERE name = $1
"""

# -- mark_schedules_seen: the schedules $1 are still in a running scheduler's registry
MARK_SCHEDULES_SEEN = """
UPDATE pgqueue.schedules SET seen_at = now() WHERE name = ANY ($1::text[])
"""

# -- prune_unseen_schedules: delete the schedules no scheduler has marked for $1 seconds (removed
# -- from every registry: a live one is marked every few minutes)
PRUNE_UNSEEN_SCHEDULES = """
DELETE FROM pgqueue.schedules WHERE seen_at < now() - make_interval(secs => $1)
"""

# -- list_schedules: every schedule, by name; stale when no scheduler has marked it for $1
# -- seconds (its registries dropped it; it is deleted later)
LIST_SCHEDULES = """
SELECT name, kind, queue, schedule, last_tick, next_tick, last_job_id, updated_at, seen_at,
       seen_at < now() - make_interval(secs => $1) AS stale
FROM pgqueue.schedules ORDER BY name
"""
