"""pgqueue schema version 8: the governor (fair turns, budgets, breaker, adaptive rate).

Revision ID: 0011_pgqueue_v8
Revises: 0010_pgqueue_v7
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0011_pgqueue_v8"
down_revision = "0010_pgqueue_v7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=8)


def downgrade() -> None:
    pgqueue_downgrade(to=7)
