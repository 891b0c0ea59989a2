"""Storyboard changes notify `storyboard_events`: one notification per changed project per
statement, which wakes that project's live-progress streams (service/events.py).

Statement-level triggers with transition tables: a statement that writes every storyboard of
a project (generate, a bulk repair) sends one notification, not one per row. The payload is
the project's id; streams re-read the status themselves, so nothing else needs to fit in a
notification's 8,000 bytes. Postgres delivers notifications at commit (and drops duplicates
within a transaction), so a stream that wakes reads the committed change.

Revision ID: 0006_storyboard_events
Revises: 0005_pgqueue_v4
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0006_storyboard_events"
down_revision = "0005_pgqueue_v4"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION storyboard.notify_storyboard_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- An INSERT has no OLD TABLE and a DELETE no NEW TABLE: each operation has its own
    -- trigger below, naming only the transition tables it has.
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('storyboard_events', project_id::text)
        FROM (SELECT DISTINCT project_id FROM new_rows) AS changed;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('storyboard_events', project_id::text)
        FROM (SELECT project_id FROM new_rows UNION SELECT project_id FROM old_rows) AS changed;
    ELSE
        PERFORM pg_notify('storyboard_events', project_id::text)
        FROM (SELECT DISTINCT project_id FROM old_rows) AS changed;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER storyboards_notify_insert
AFTER INSERT ON storyboard.storyboards
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION storyboard.notify_storyboard_events();

CREATE TRIGGER storyboards_notify_update
AFTER UPDATE ON storyboard.storyboards
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION storyboard.notify_storyboard_events();

CREATE TRIGGER storyboards_notify_delete
AFTER DELETE ON storyboard.storyboards
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION storyboard.notify_storyboard_events();
"""

DOWNGRADE = r"""
DROP TRIGGER storyboards_notify_delete ON storyboard.storyboards;
DROP TRIGGER storyboards_notify_update ON storyboard.storyboards;
DROP TRIGGER storyboards_notify_insert ON storyboard.storyboards;
DROP FUNCTION storyboard.notify_storyboard_events();
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
