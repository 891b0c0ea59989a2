"""pgqueue schema version 16: an adaptive key's refused probe costs one 429, not a pause; a key
with nothing learnt yet paces its first burst.

Revision ID: 0022_pgqueue_v16
Revises: 0021_pgqueue_v15
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0022_pgqueue_v16"
down_revision = "0021_pgqueue_v15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=16)


def downgrade() -> None:
    pgqueue_downgrade(to=15)
