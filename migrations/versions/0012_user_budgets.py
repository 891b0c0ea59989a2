"""Per-user budget overrides: `python -m service budget --user NAME --per-day N` writes here.

A user without a row spends within their tier's `BUDGET_FREE_PER_DAY` / `BUDGET_PRO_PER_DAY`;
a row overrides it. pgqueue's own `pgqueue.budgets` holds the amount the claim obeys (the API
sets it from this at each generate, and the command at once).

Revision ID: 0012_user_budgets
Revises: 0011_pgqueue_v8
Create Date: 2026-12-03
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0012_user_budgets"
down_revision = "0011_pgqueue_v8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        "CREATE TABLE storyboard.user_budgets ("
        " user_name text PRIMARY KEY CHECK (length(user_name) BETWEEN 1 AND 200),"
        " per_day numeric NOT NULL CHECK (per_day >= 0 AND per_day < 1e12),"
        " updated_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    run_script("DROP TABLE storyboard.user_budgets")
