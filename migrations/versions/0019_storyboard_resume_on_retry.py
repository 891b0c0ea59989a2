"""A retried storyboard job's storyboard reads `generating` again, in the retry's transaction.

A failed or cancelled job goes back to `queued` through `POST /api/jobs/{id}/retry`, the
dashboard, `python -m pgqueue retry` or plain SQL (`pgqueue.retry(id)`): all of them run
pgqueue's one retry statement, and only this trigger sees every one of them. Without it, the
storyboard kept reading `failed` (and its project `done`) while its job ran again.

It fires only on a storyboard job's step from `failed` or `cancelled` to `queued` (a retry; the
claim, the completion and the reaper never take that step), so the hot path pays only the
WHEN test. The storyboard is fenced as every writer's is: only while it still belongs to that
job, and only a `failed` one (one whose image landed stays `success`). The project's row is
locked before the storyboard's, the order of the service's writers (service/queries.py), and
the project reads `generating` with it, as `FINISH_PROJECT` would say.

Revision ID: 0019_storyboard_resume_on_retry
Revises: 0018_storyboard_jobs_idx
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0019_storyboard_resume_on_retry"
down_revision = "0018_storyboard_jobs_idx"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION storyboard.resume_retried_storyboard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    project uuid;
BEGIN
    BEGIN
        project := (NEW.payload ->> 'project_id')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN NULL;  -- not a storyboard payload: no storyboard to resume
    END;
    PERFORM 1 FROM storyboard.projects WHERE id = project FOR NO KEY UPDATE;
    UPDATE storyboard.storyboards
    SET status = 'generating', error = NULL, updated_at = now()
    WHERE project_id = project AND job_id = NEW.id AND status = 'failed';
    IF FOUND THEN
        UPDATE storyboard.projects SET status = 'generating', updated_at = now()
        WHERE id = project;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER storyboard_resume_retried
AFTER UPDATE OF state ON pgqueue.jobs
FOR EACH ROW
WHEN (NEW.kind = 'storyboard.generate' AND NEW.state = 'queued'
      AND OLD.state IN ('failed', 'cancelled'))
EXECUTE FUNCTION storyboard.resume_retried_storyboard();
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(
        "DROP TRIGGER storyboard_resume_retried ON pgqueue.jobs;"
        " DROP FUNCTION storyboard.resume_retried_storyboard()"
    )
