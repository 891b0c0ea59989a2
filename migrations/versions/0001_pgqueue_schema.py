"""pgqueue schema version 1: jobs, concurrency slots, finished-job counters, queue_stats view.

The DDL ships inside pgqueue (`pgqueue/schema/v0001.sql`); this revision asks pgqueue's runner
for it, so a database migrated by this chain and one installed with `python -m pgqueue migrate`
are the same, and pgqueue records its version in its own table, beside `alembic_version`.

Revision ID: 0001_pgqueue
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0001_pgqueue"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=1)


def downgrade() -> None:
    pgqueue_downgrade(to=0)
