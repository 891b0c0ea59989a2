"""pgqueue schema version 2: a freed concurrency slot wakes the queue; the job_status view.

After the service's revision only to keep the chain linear: 0002_service references no
pgqueue object (its storyboards hold a job id with no foreign key), so the order between the
two does not matter to either. The service's status reads need `pgqueue.job_status`, so its
code needs this revision applied.

Revision ID: 0003_pgqueue_v2
Revises: 0002_service
Create Date: 2026-12-01
"""

from __future__ import annotations

from migrations._sql import pgqueue_downgrade, pgqueue_upgrade

revision = "0003_pgqueue_v2"
down_revision = "0002_service"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue_upgrade(to=2)


def downgrade() -> None:
    pgqueue_downgrade(to=1)
