"""pgqueue schema version 9: checkpoints, a step's result kept across a job's attempts.

Revision ID: 0013_pgqueue_v9
Revises: 0012_user_budgets
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0013_pgqueue_v9"
down_revision = "0012_user_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=9)


def downgrade() -> None:
    pgqueue_downgrade(to=8)
