"""pgqueue schema version 13: an index for listings by kind; job_status shows the payload.

Revision ID: 0017_pgqueue_v13
Revises: 0016_pgqueue_v12
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0017_pgqueue_v13"
down_revision = "0016_pgqueue_v12"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=13)


def downgrade() -> None:
    pgqueue_downgrade(to=12)
