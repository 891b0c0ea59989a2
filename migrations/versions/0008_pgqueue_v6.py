"""pgqueue schema version 6: schedules of periodic jobs.

Revision ID: 0008_pgqueue_v6
Revises: 0007_pgqueue_v5
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0008_pgqueue_v6"
down_revision = "0007_pgqueue_v5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=6)


def downgrade() -> None:
    pgqueue_downgrade(to=5)
