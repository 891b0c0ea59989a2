"""pgqueue schema version 4: an enqueue's commit no longer carries a NOTIFY (pgqueue sends it).

Revision ID: 0005_pgqueue_v4
Revises: 0004_pgqueue_v3
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0005_pgqueue_v4"
down_revision = "0004_pgqueue_v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=4)


def downgrade() -> None:
    pgqueue_downgrade(to=3)
