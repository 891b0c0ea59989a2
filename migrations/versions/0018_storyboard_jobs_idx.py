"""The storyboard jobs of a project, indexed: a user's job listing and pending cap read them.

`GET /api/jobs` for a user and the per-user cap of pending jobs find the user's jobs by the
project id in their payload. Without an index that was a scan of every job ever kept (110-135
ms a listing at 500k finished jobs, linear in the table); with these it reads the user's own
(measured at 500k finished jobs of other users, the user's 50 jobs on 5 projects the oldest:
151 ms a page before, 0.34 ms after; the cap's count 0.07 ms):

- `storyboard_jobs_project_idx`: a project's storyboard jobs, newest first (the listing takes
  a page per project, newest first, and merges them);
- `storyboard_live_jobs_project_idx`: only those queued or running, a few per active project
  (the cap counts them at every generate and retry, however many finished ones a user has).

They index pgqueue's table, which the service otherwise only reads through `job_status`:
an index changes no row and no rule of pgqueue's, and only the service knows its payload.

Revision ID: 0018_storyboard_jobs_idx
Revises: 0017_pgqueue_v13
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0018_storyboard_jobs_idx"
down_revision = "0017_pgqueue_v13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        "CREATE INDEX storyboard_jobs_project_idx ON pgqueue.jobs ((payload ->> 'project_id'), id)"
        " WHERE kind = 'storyboard.generate';"
        " CREATE INDEX storyboard_live_jobs_project_idx"
        " ON pgqueue.jobs ((payload ->> 'project_id'))"
        " WHERE kind = 'storyboard.generate' AND state IN ('queued', 'running')"
    )


def downgrade() -> None:
    run_script(
        "DROP INDEX pgqueue.storyboard_live_jobs_project_idx;"
        " DROP INDEX pgqueue.storyboard_jobs_project_idx"
    )
