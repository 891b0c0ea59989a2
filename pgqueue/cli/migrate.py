"""pgqueue's own schema from the command line: `migrate` and `schema-version`.

    python -m pgqueue migrate                   # to the latest version this package ships
    python -m pgqueue migrate --to N            # up to version N (never down)
    python -m pgqueue migrate --downgrade-to N  # down to version N; 0 removes pgqueue entirely
    python -m pgqueue schema-version            # prints the database's version (0: none)

Only pgqueue's own schema is touched, with a version record of its own
(`pgqueue.schema_version`), so an application's alembic (or other) migrations are left alone.
"""

from __future__ import annotations

import argparse

import asyncpg

from pgqueue import schema
from pgqueue.cli.common import Exit


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `migrate` and `schema-version` (which run on any schema, or none)."""
    migrate = commands.add_parser("migrate", help="install or upgrade (or downgrade) the schema")
    direction = migrate.add_mutually_exclusive_group()
    direction.add_argument(
        "--to", type=int, metavar="N", help=f"upgrade to version N (default {schema.LATEST})"
    )
    direction.add_argument(
        "--downgrade-to", type=int, metavar="N", help="downgrade to version N (0: remove all)"
    )
    migrate.set_defaults(handler=run_migrate, needs_schema=False, check=_check_versions)
    version = commands.add_parser(
        "schema-version", help="print the database's pgqueue schema version"
    )
    version.set_defaults(handler=print_version, needs_schema=False)


async def run_migrate(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """Upgrade (or downgrade) and say what was done."""
    # Through a transaction pooler too: a run is one transaction, its lock transaction-scoped.
    if args.downgrade_to is not None:
        reverted = await schema.downgrade(conn, args.downgrade_to)
        done = f"reverted {_listed(reverted)}" if reverted else "nothing to revert"
    else:
        applied = await schema.upgrade(conn, args.to)
        done = f"applied {_listed(applied)}" if applied else "already up to date"
    print(f"pgqueue schema: {done}; now at version {await schema.current_version(conn)}")
    return Exit.OK


async def print_version(_args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """The database's version (0: no pgqueue schema)."""
    print(await schema.current_version(conn))
    return Exit.OK


def _check_versions(args: argparse.Namespace) -> str | None:
    for option in ("to", "downgrade_to"):
        value = getattr(args, option, None)
        if value is not None and not 0 <= value <= schema.LATEST:
            flag = "--" + option.replace("_", "-")
            return f"{flag} must be within 0..{schema.LATEST}, got {value}"
    return None


def _listed(versions: list[int]) -> str:
    noun = "version" if len(versions) == 1 else "versions"
    return f"{noun} {', '.join(map(str, versions))}"
