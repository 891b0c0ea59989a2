"""`python -m pgqueue migrate | schema-version`: install, upgrade or inspect pgqueue's schema.

    python -m pgqueue migrate                   # to the latest version this package ships
    python -m pgqueue migrate --to N            # up to version N (never down)
    python -m pgqueue migrate --downgrade-to N  # down to version N; 0 removes pgqueue entirely
    python -m pgqueue schema-version            # prints the database's version (0: none)

The database is the one `DATABASE_URL` names; only pgqueue's own schema is touched, with a
version record of its own (`pgqueue.schema_version`), so an application's alembic (or other)
migrations are left alone. Exit status: 0 on success, 1 when the database refused or could not
be reached, 2 on bad arguments or a missing `DATABASE_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg

from pgqueue import schema
from pgqueue.database import Database

MISSING_DATABASE_URL = (
    "error: DATABASE_URL is not set: name the database to migrate, e.g. "
    "DATABASE_URL=postgresql://user@host:5432/app python -m pgqueue migrate"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m pgqueue", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="install or upgrade (or downgrade) the schema")
    direction = migrate.add_mutually_exclusive_group()
    direction.add_argument(
        "--to", type=int, metavar="N", help=f"upgrade to version N (default {schema.LATEST})"
    )
    direction.add_argument(
        "--downgrade-to", type=int, metavar="N", help="downgrade to version N (0: remove all)"
    )
    commands.add_parser("schema-version", help="print the database's pgqueue schema version")
    args = parser.parse_args(argv)
    for option in ("to", "downgrade_to"):
        value = getattr(args, option, None)
        if value is not None and not 0 <= value <= schema.LATEST:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} must be within 0..{schema.LATEST}, got {value}")
    return args


async def run(args: argparse.Namespace, database: Database) -> str:
    """Carry out the command on `database`; returns what to print."""
    # Through a transaction pooler too: a run is one transaction, its lock transaction-scoped.
    conn = await database.connect()
    try:
        if args.command == "schema-version":
            return str(await schema.current_version(conn))
        if args.downgrade_to is not None:
            reverted = await schema.downgrade(conn, args.downgrade_to)
            done = f"reverted {_listed(reverted)}" if reverted else "nothing to revert"
        else:
            applied = await schema.upgrade(conn, args.to)
            done = f"applied {_listed(applied)}" if applied else "already up to date"
        return f"pgqueue schema: {done}; now at version {await schema.current_version(conn)}"
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    # Read directly rather than through QueueSettings: migrating needs nothing else, and a
    # malformed PGQUEUE_* variable meant for the workers must not block a migration.
    try:
        database = Database.from_environ(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if database is None:
        print(MISSING_DATABASE_URL, file=sys.stderr)
        return 2
    try:
        print(asyncio.run(run(args, database)))
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        schema.SchemaVersionError,
    ) as exc:
        # The operator's problem to fix (server down, wrong credentials, a foreign schema):
        # one line saying what, not a traceback.
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _listed(versions: list[int]) -> str:
    noun = "version" if len(versions) == 1 else "versions"
    return f"{noun} {', '.join(map(str, versions))}"


if __name__ == "__main__":
    sys.exit(main())
