"""pgqueue schema version 17: a quota that rose is climbed by doubling; a refused start gives
its place in the pace back.

Revision ID: 0023_pgqueue_v17
Revises: 0022_pgqueue_v16
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0023_pgqueue_v17"
down_revision = "0022_pgqueue_v16"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=17)


def downgrade() -> None:
    pgqueue_downgrade(to=16)
