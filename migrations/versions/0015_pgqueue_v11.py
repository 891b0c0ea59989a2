"""pgqueue schema version 11: a SQL interface (enqueue, cancel, retry) and finished notifications.

Revision ID: 0015_pgqueue_v11
Revises: 0014_pgqueue_v10
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0015_pgqueue_v11"
down_revision = "0014_pgqueue_v10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=11)


def downgrade() -> None:
    pgqueue_downgrade(to=10)
