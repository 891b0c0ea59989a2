"""pgqueue schema version 5: paused queues, and finished jobs counted per minute.

Revision ID: 0007_pgqueue_v5
Revises: 0006_storyboard_events
Create Date: 2026-12-02
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0007_pgqueue_v5"
down_revision = "0006_storyboard_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=5)


def downgrade() -> None:
    pgqueue_downgrade(to=4)
