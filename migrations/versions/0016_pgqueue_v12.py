"""pgqueue schema version 12: attempt history (pgqueue.attempts), live workers (workers).

Revision ID: 0016_pgqueue_v12
Revises: 0015_pgqueue_v11
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0016_pgqueue_v12"
down_revision = "0015_pgqueue_v11"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=12)


def downgrade() -> None:
    pgqueue_downgrade(to=11)
