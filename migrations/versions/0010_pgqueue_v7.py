"""pgqueue schema version 7: rate limits decided inside the claim, and throttles.

Revision ID: 0010_pgqueue_v7
Revises: 0009_storyboard_generating_idx
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0010_pgqueue_v7"
down_revision = "0009_storyboard_generating_idx"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=7)


def downgrade() -> None:
    pgqueue_downgrade(to=6)
