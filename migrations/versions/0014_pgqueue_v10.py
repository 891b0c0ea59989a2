"""pgqueue schema version 10: an index for listings by kind; job_status shows the payload.

Revision ID: 0014_pgqueue_v10
Revises: 0013_pgqueue_v9
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0014_pgqueue_v10"
down_revision = "0013_pgqueue_v9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=10)


def downgrade() -> None:
    pgqueue_downgrade(to=9)
