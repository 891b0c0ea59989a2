"""pgqueue schema version 3: idle concurrency slots can be deleted safely.

Revision ID: 0004_pgqueue_v3
Revises: 0003_pgqueue_v2
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0004_pgqueue_v3"
down_revision = "0003_pgqueue_v2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=3)


def downgrade() -> None:
    pgqueue_downgrade(to=2)
