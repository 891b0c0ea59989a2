"""Runs a multi-statement SQL script inside the migration's transaction.

asyncpg prepares every statement it is given through SQLAlchemy, and a prepared statement holds
one command only; the driver's own `execute()` without arguments uses the simple query protocol,
which takes a whole script (functions with `$$` bodies included) in one round trip.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_


def run_script(sql: str) -> None:
    """Execute `sql` (several statements allowed) on the migration's connection."""
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    await_(driver_connection.execute(sql))
