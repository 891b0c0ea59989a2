"""Every SQL statement of the storyboard service, as named constants.

Only `storyboards.py`, `user_jobs.py`, `auth.py`, `routes.py` and `jobs.py` execute these.
Parameters are `$n` placeholders, never interpolated. Lock order, to rule out deadlocks: a
job's row (taken by `JobContext.transaction`, or a retry), then the project's row
(`LOCK_PROJECT`), then storyboard rows.

Jobs are read through `pgqueue.job_status`, the view pgqueue owns for applications, never
through its tables: what makes a job live (its lease) is pgqueue's to define. The service
only indexes them (migration 0015) and follows their retries (0016).
"""

from __future__ import annotations

# -- insert_token: store the hash of a new API token
INSERT_TOKEN = """
INSERT INTO storyboard.api_tokens (user_name, token_hash, tier, is_admin)
VALUES ($1, $2, $3, $4)
RETURNING id
"""

# -- select_token_user: who holds the token with this hash
SELECT_TOKEN_USER = """
SELECT user_name, tier, is_admin FROM storyboard.api_tokens WHERE token_hash = $1
"""

# -- insert_project: a new project, owned by $1
INSERT_PROJECT = """
INSERT INTO storyboard.projects (owner, title, style, aspect_ratio)
VALUES ($1, $2, $3, $4)
RETURNING *
"""

# -- insert_characters: a project's characters, one row per array element
INSERT_CHARACTERS = """
INSERT INTO storyboard.characters (project_id, name, position, description, reference_image_url)
SELECT $1, l.name, l.position, l.description, l.url
FROM unnest($2::text[], $3::int[], $4::text[], $5::text[]) AS l(name, position, description, url)
"""

# -- insert_shots: a project's shots; $5 holds each shot's character names as a JSON array,
# -- because Postgres arrays of arrays must be rectangular
INSERT_SHOTS = """
INSERT INTO storyboard.shots (project_id, shot_number, description, duration_seconds, characters)
SELECT $1, l.shot_number, l.description, l.duration,
       ARRAY(SELECT jsonb_array_elements_text(l.characters::jsonb))
FROM unnest($2::int[], $3::text[], $4::float8[], $5::text[])
     AS l(shot_number, description, duration, characters)
"""

# -- insert_storyboards: one `pending` storyboard per shot
INSERT_STORYBOARDS = """
INSERT INTO storyboard.storyboards (project_id, shot_number)
SELECT $1, unnest($2::int[])
"""

# -- list_projects: the projects of owner $1, newest first, with their storyboard counts
LIST_PROJECTS = """
SELECT p.*,
       (SELECT count(*) FROM storyboard.shots AS s WHERE s.project_id = p.id) AS shot_count
FROM storyboard.projects AS p
WHERE p.owner = $1
ORDER BY p.created_at DESC, p.id
LIMIT $2
"""

# -- get_project: one project of owner $2 (None for anyone else's: they read 404)
GET_PROJECT = """
SELECT * FROM storyboard.projects WHERE id = $1 AND owner = $2
"""

# -- lock_own_project: the same, locked, to serialise generate calls on one project
LOCK_OWN_PROJECT = """
SELECT * FROM storyboard.projects WHERE id = $1 AND owner = $2 FOR NO KEY UPDATE
"""

# -- lock_user_generations: serialise one user's generate calls (across projects) for the
# -- pending-jobs cap; held to the transaction's end, so it works through a pooler too
LOCK_USER_GENERATIONS = """
SELECT pg_advisory_xact_lock(hashtextextended('storyboard.user:' || $1, 0))
"""

# -- count_user_pending: storyboard jobs of owner $1 queued or running, however they got
# -- there (a generate, a regenerate, a retry through the API, the dashboard or the CLI): the
# -- jobs themselves, found by their payload's project id (storyboard_live_jobs_project_idx),
# -- not the storyboards that point at them, which a retried job's may no longer do
COUNT_USER_PENDING = """
SELECT count(*)
FROM storyboard.projects AS p
JOIN pgqueue.job_status AS j
  ON j.kind = 'storyboard.generate' AND j.payload ->> 'project_id' = p.id::text
 AND j.state IN ('queued', 'running')
WHERE p.owner = $1
"""

# -- list_user_job_ids: the ids of owner $1's storyboard jobs, newest first, below id $2, in
# -- queue $3 and state $4 (NULL: any), $5 at most. A page per project from
# -- storyboard_jobs_project_idx (an index scan, newest first, stopping after $5), merged:
# -- it reads the user's own jobs, never the table, and every project of theirs
LIST_USER_JOB_IDS = """
SELECT j.id
FROM storyboard.projects AS p
CROSS JOIN LATERAL (
    SELECT s.id
    FROM pgqueue.job_status AS s
    WHERE s.kind = 'storyboard.generate' AND s.payload ->> 'project_id' = p.id::text
      AND s.id < $2
      AND ($3::text IS NULL OR s.queue = $3)
      AND ($4::pgqueue.job_state IS NULL OR s.state = $4)
    ORDER BY s.payload ->> 'project_id' DESC, s.id DESC
    LIMIT $5
) AS j
WHERE p.owner = $1
ORDER BY j.id DESC
LIMIT $5
"""

# -- lock_job_project: the project of a storyboard job, locked (after the job's row: the
# -- order above), with its owner
LOCK_JOB_PROJECT = """
SELECT id, owner FROM storyboard.projects WHERE id = $1 FOR NO KEY UPDATE
"""

# -- lock_project: serialise the writers that finish a project's generation, so the last one
# -- to commit sees every other storyboard's final state (READ COMMITTED takes a new snapshot
# -- per statement, after the lock wait)
LOCK_PROJECT = """
SELECT id FROM storyboard.projects WHERE id = $1 FOR NO KEY UPDATE
"""

# -- owns_project: whether project $1 (from a job's payload) belongs to $2
OWNS_PROJECT = """
SELECT EXISTS (SELECT 1 FROM storyboard.projects WHERE id = $1 AND owner = $2)
"""

# -- select_characters: a project's characters in their given order
SELECT_CHARACTERS = """
SELECT name, description, reference_image_url
FROM storyboard.characters WHERE project_id = $1 ORDER BY position
"""

# -- select_shots: a project's shots
SELECT_SHOTS = """
SELECT shot_number, description, duration_seconds, characters
FROM storyboard.shots WHERE project_id = $1 ORDER BY shot_number
"""

# -- select_storyboards: a project's storyboards, the live attempt count of their jobs, and
# -- the project's step status read in the same snapshot
SELECT_STORYBOARDS = """
SELECT s.shot_number, s.status, s.image_url, s.error, s.job_id, s.generation,
       greatest(s.attempts, coalesce(j.attempts, 0)) AS attempts, j.progress AS job_progress,
       p.status AS project_status
FROM storyboard.storyboards AS s
JOIN storyboard.projects AS p ON p.id = s.project_id
LEFT JOIN pgqueue.job_status AS j ON j.id = s.job_id
WHERE s.project_id = $1
ORDER BY s.shot_number
"""


# The storyboards of project $1 that are `generating` although nothing will ever finish them:
# their job ended (failed or cancelled, and its hook did not run; or succeeded without
# writing), or no live job has held them for $2 seconds (the job is gone, or its lease lapsed
# with no worker left to reap it). What "live" means is pgqueue's: `job_status.is_live`.
def _stale_where(timeout: str) -> str:
    # The condition, with the timeout in seconds as parameter `timeout` ("$2").
    return f"""s.status = 'generating'
  AND (j.state IN ('failed', 'cancelled', 'succeeded')
       OR (s.updated_at < now() - make_interval(secs => {timeout})
           AND NOT coalesce(j.is_live, false))
       -- an attempt still running that long after it started, its heartbeats alive or not:
       -- the job's own time limit should have ended it (a job enqueued without one, by hand
       -- or by an older API, has none)
       OR (j.state = 'running' AND j.started_at < now() - make_interval(secs => {timeout}))
       -- a job still waiting to start that long after the generate (for the upstream's
       -- breaker or rate limit, a paused queue, a retry's backoff): the promise is the same
       -- however it waits, but for a budget, which a shot waits for as long as it takes
       OR (j.state = 'queued' AND NOT j.over_budget
           AND s.updated_at < now() - make_interval(secs => {timeout})))"""


_STALE = f"""
SELECT s.shot_number, s.job_id, j.state::text AS job_state, j.attempts AS job_attempts,
       j.last_error,
       coalesce(j.is_live AND j.state = 'running', false) AS overdue
FROM storyboard.storyboards AS s
LEFT JOIN pgqueue.job_status AS j ON j.id = s.job_id
WHERE s.project_id = $1 AND {_stale_where("$2")}
"""

# -- select_stale_projects: the projects with a stale storyboard (as _STALE says, for any
# -- project; the partial index storyboards_generating_idx keeps it to generating rows)
SELECT_STALE_PROJECTS = f"""
SELECT DISTINCT s.project_id
FROM storyboard.storyboards AS s
LEFT JOIN pgqueue.job_status AS j ON j.id = s.job_id
WHERE {_stale_where("$1")}
"""

# -- select_project_image_urls: the images a project's storyboards refer to
SELECT_PROJECT_IMAGE_URLS = """
SELECT image_url FROM storyboard.storyboards WHERE project_id = $1 AND image_url IS NOT NULL
"""

# -- has_stale_storyboards: cheap, lock-free check before SELECT_STALE_STORYBOARDS
HAS_STALE_STORYBOARDS = f"SELECT EXISTS ({_STALE})"

# -- select_stale_storyboards: the stale storyboards with what their jobs left behind
SELECT_STALE_STORYBOARDS = _STALE

# -- fail_storyboards: storyboards of project $1 turn `failed` with the given errors, each one
# -- only while it is still `generating` under the job named: a storyboard a later job took
# -- over, or that already ended, is left alone (the fence that makes repeats harmless)
FAIL_STORYBOARDS = """
UPDATE storyboard.storyboards AS s
SET status = 'failed', error = l.error, attempts = greatest(s.attempts, l.attempts),
    updated_at = now()
FROM unnest($2::int[], $3::bigint[], $4::text[], $5::int[])
     AS l(shot_number, job_id, error, attempts)
WHERE s.project_id = $1 AND s.shot_number = l.shot_number AND s.job_id = l.job_id
  AND s.status = 'generating'
RETURNING s.shot_number
"""

# -- start_generation: a new generation number for the jobs about to be enqueued
START_GENERATION = """
UPDATE storyboard.projects
SET generation = generation + 1, status = 'generating', updated_at = now()
WHERE id = $1
RETURNING generation
"""

# -- mark_generating: point storyboards at their new jobs
MARK_GENERATING = """
UPDATE storyboard.storyboards AS s
SET status = 'generating', job_id = l.job_id, generation = $2, error = NULL, attempts = 0,
    updated_at = now()
FROM unnest($3::int[], $4::bigint[]) AS l(shot_number, job_id)
WHERE s.project_id = $1 AND s.shot_number = l.shot_number
"""

# -- finish_project: the one home of the project's step status, run after every change of
# -- its storyboards: generating while any is; else completed (no failure), failed (no
# -- success), partial (both). Shots never asked for (`pending`) do not count; a project with
# -- nothing attempted stays `pending`. Reads take the stored value (SELECT_STORYBOARDS).
FINISH_PROJECT = """
WITH counts AS (
    SELECT count(*) FILTER (WHERE status = 'generating') AS generating,
           count(*) FILTER (WHERE status = 'success') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) AS total
    FROM storyboard.storyboards WHERE project_id = $1
)
UPDATE storyboard.projects AS p
SET status = CASE WHEN c.generating > 0 THEN 'generating'
                  WHEN c.succeeded = 0 AND c.failed = 0 THEN 'pending'
                  WHEN c.failed = 0 THEN 'completed'
                  WHEN c.succeeded = 0 THEN 'failed'
                  ELSE 'partial' END,
    updated_at = now()
FROM counts AS c
WHERE p.id = $1
RETURNING p.status, c.generating, c.succeeded, c.failed, c.total
"""

# -- select_shot_for_job: what a storyboard job needs to build its image request, and which
# -- job owns the storyboard now
SELECT_SHOT_FOR_JOB = """
SELECT p.style, p.aspect_ratio, sh.description, s.status, s.job_id,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'name', c.name, 'description', c.description,
                            'reference_image_url', c.reference_image_url)
                        ORDER BY c.position)
                 FROM storyboard.characters AS c
                 WHERE c.project_id = p.id AND c.name = ANY(sh.characters)),
                '[]'::jsonb) AS characters
FROM storyboard.projects AS p
JOIN storyboard.shots AS sh ON sh.project_id = p.id
JOIN storyboard.storyboards AS s
  ON s.project_id = sh.project_id AND s.shot_number = sh.shot_number
WHERE p.id = $1 AND sh.shot_number = $2
"""

# -- mark_success: the job $3 that owns the storyboard stored its image
MARK_SUCCESS = """
UPDATE storyboard.storyboards
SET status = 'success', image_url = $4, error = NULL, attempts = $5, updated_at = now()
WHERE project_id = $1 AND shot_number = $2 AND job_id = $3
RETURNING shot_number
"""

# -- ping: does the database answer?
PING = """
SELECT 1
"""

# -- user_budget_override: the daily budget `python -m service budget` set for user $1, if any
USER_BUDGET_OVERRIDE = """
SELECT per_day FROM storyboard.user_budgets WHERE user_name = $1
"""

# -- set_user_budget_override: user $1 may spend $2 credits a day, whatever their tier
SET_USER_BUDGET_OVERRIDE = """
INSERT INTO storyboard.user_budgets (user_name, per_day) VALUES ($1, $2)
ON CONFLICT (user_name) DO UPDATE SET per_day = EXCLUDED.per_day, updated_at = now()
"""

# -- clear_user_budget_override: user $1 spends within their tier's budget again
CLEAR_USER_BUDGET_OVERRIDE = """
DELETE FROM storyboard.user_budgets WHERE user_name = $1
"""

# -- user_tier: the tier of user $1's newest token (NULL: no token)
USER_TIER = """
SELECT tier FROM storyboard.api_tokens WHERE user_name = $1 ORDER BY created_at DESC LIMIT 1
"""

# -- notify_project_changed: wake the live streams of project $1 (what the storyboards' own
# -- triggers send on a change), e.g. when one of its shots starts
NOTIFY_PROJECT_CHANGED = """
SELECT pg_notify('storyboard_events', $1::text)
"""
