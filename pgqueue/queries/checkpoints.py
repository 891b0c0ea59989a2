"""Statements of checkpoints: a step's value, kept for a job's later attempts (schema v9)."""

from __future__ import annotations

# -- read_checkpoint: fenced; the value job $1 stored under the name $3, read only while lease
# -- $2 is held. No row: the lease is lost (run nothing that costs); a row with a NULL value:
# -- nothing is stored under that name yet.
READ_CHECKPOINT = """
SELECT c.value
FROM pgqueue.jobs AS j
LEFT JOIN pgqueue.checkpoints AS c ON c.job_id = j.id AND c.name = $3
WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'
"""

# -- save_checkpoint: fenced; store $4 under the name $3 of job $1 while lease $2 is held. The
# -- first value stored stays: a second save of the name (the same statement retried after a
# -- lost connection that had committed it, or two calls racing) inserts nothing and returns no
# -- row, as a lost lease does; READ_CHECKPOINT then tells the two apart.
SAVE_CHECKPOINT = """
INSERT INTO pgqueue.checkpoints (job_id, name, value)
SELECT j.id, $3, $4 FROM pgqueue.jobs AS j
WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'
ON CONFLICT (job_id, name) DO NOTHING
RETURNING true AS saved
"""
