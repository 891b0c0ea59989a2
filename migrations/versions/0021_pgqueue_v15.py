"""pgqueue schema version 15: claims start at a mark per queue and priority, past the jobs a
held snapshot keeps dead.

Revision ID: 0021_pgqueue_v15
Revises: 0020_pgqueue_v14
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0021_pgqueue_v15"
down_revision = "0020_pgqueue_v14"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=15)


def downgrade() -> None:
    pgqueue_downgrade(to=14)
