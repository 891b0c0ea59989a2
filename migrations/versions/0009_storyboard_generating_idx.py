"""The storyboards still `generating`, indexed: what the periodic expiry looks at every minute.

`storyboard.expire` (service/upkeep.py) finds projects with a storyboard whose time is up;
without this partial index that is a scan of every storyboard ever made, once a minute.
It holds only the rows being generated, a few per running project.

Revision ID: 0009_storyboard_generating_idx
Revises: 0008_pgqueue_v6
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0009_storyboard_generating_idx"
down_revision = "0008_pgqueue_v6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        "CREATE INDEX storyboards_generating_idx ON storyboard.storyboards (project_id)"
        " WHERE status = 'generating'"
    )


def downgrade() -> None:
    run_script("DROP INDEX storyboard.storyboards_generating_idx")
