"""pgqueue schema version 14: claims start at a mark per queue and priority, past the jobs a
held snapshot keeps dead.

Revision ID: 0020_pgqueue_v14
Revises: 0019_storyboard_resume_on_retry
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0020_pgqueue_v14"
down_revision = "0019_storyboard_resume_on_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=14)


def downgrade() -> None:
    pgqueue_downgrade(to=13)
