"""Helpers of the revisions: SQL scripts and pgqueue's schema runner, in the revision's transaction.

asyncpg prepares every statement it is given through SQLAlchemy, and a prepared statement holds
one command only; the driver's own `execute()` without arguments uses the simple query protocol,
which takes a whole script (functions with `$$` bodies included) in one round trip.
"""

from __future__ import annotations

from typing import Any

from alembic import op
from sqlalchemy.util import await_

from pgqueue import schema


def driver_connection() -> Any:
    """The revision's asyncpg connection, with the revision's transaction open on it.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs itself.
    A revision that only talks to the driver would otherwise run with no transaction at all
    (autocommit: every revision but the first, measured), apart from alembic's update of
    `alembic_version`; one no-op statement through SQLAlchemy opens the transaction first.
    """
    bind = op.get_bind()
    bind.exec_driver_sql("SELECT 1")
    connection = bind.connection.driver_connection
    assert connection is not None
    return connection


def run_script(sql: str) -> None:
    """Execute `sql` (several statements allowed) in the revision's transaction."""
    await_(driver_connection().execute(sql))


def pgqueue_upgrade(to: int) -> None:
    """`pgqueue.schema.upgrade(to=...)`, joining the revision's transaction as a savepoint."""
    await_(schema.upgrade(driver_connection(), to=to))


def pgqueue_downgrade(to: int) -> None:
    """`pgqueue.schema.downgrade(to=...)`, joining the revision's transaction as a savepoint."""
    await_(schema.downgrade(driver_connection(), to=to))
