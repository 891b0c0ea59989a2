"""`python -m pgqueue`: the operator's command line, on the database `DATABASE_URL` names.

    migrate, schema-version          pgqueue's own schema (cli/migrate.py)
    jobs, show, retry, cancel, purge  jobs (cli/jobs.py)
    queues, pause, resume             queues (cli/queues.py)
    workers                           the workers alive now (cli/workers.py)
    dashboard                         the dashboard served on its own (cli/dashboard.py)

Human output is an aligned table; `--json` prints one JSON object per line. Exit status: 0 on
success; 1 when the database is unreachable or refused (a job in a state the action does not
apply to, too); 2 on bad arguments, a missing `DATABASE_URL`, an unknown job id, or a database
without pgqueue's schema (or with an older one), which every command but `migrate` and
`schema-version` names together with the command that fixes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import sys
from collections.abc import Sequence

import asyncpg

from pgqueue import schema
from pgqueue.cli import dashboard, jobs, migrate, queues, workers
from pgqueue.cli.common import CommandError, Exit, connected
from pgqueue.database import Database, pooler_hint

__all__ = ["main", "parse_args"]

MISSING_DATABASE_URL = (
    "error: DATABASE_URL is not set: name pgqueue's database, e.g. "
    "DATABASE_URL=postgresql://user@host:5432/app python -m pgqueue {command}"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; argparse exits 2 on bad arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m pgqueue", description="pgqueue's operator command line (DATABASE_URL)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (migrate, jobs, queues, workers, dashboard):
        group.add_parsers(commands)
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    problem = check(args) if check is not None else None
    if problem:
        parser.error(problem)
    return args


async def run(args: argparse.Namespace, database: Database) -> Exit:
    """Carry out a command that runs on one connection."""
    if not getattr(args, "needs_schema", True):
        conn = await database.connect()
        try:
            status: Exit = await args.handler(args, conn)
        finally:
            await conn.close()
        return status
    async with connected(database) as conn:
        status = await args.handler(args, conn)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    # Read directly rather than through QueueSettings: a command needs nothing else, and a
    # malformed PGQUEUE_* variable meant for the workers must not block an operator.
    try:
        database = Database.from_environ(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    if database is None:
        print(MISSING_DATABASE_URL.format(command=args.command), file=sys.stderr)
        return Exit.USAGE
    try:
        serve = getattr(args, "serve", None)
        return int(serve(args, database) if serve else asyncio.run(run(args, database)))
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():  # the database's socket, say: an error like any other
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return Exit.REFUSED
        # The reader went away (`python -m pgqueue jobs | head`): what it wanted was written.
        # Quiet, as Unix tools are; stdout goes to /dev/null so that the interpreter's final
        # flush does not fail on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.OK
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        schema.SchemaVersionError,
    ) as exc:
        # The operator's problem to fix (server down, wrong credentials, a foreign schema):
        # one line saying what, not a traceback.
        hint = pooler_hint(exc)
        print(
            f"error: {type(exc).__name__}: {exc}" + (f" ({hint})" if hint else ""), file=sys.stderr
        )
        return Exit.REFUSED
    except KeyboardInterrupt:
        return Exit.OK


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    if not hasattr(select, "poll"):
        return True  # no poll (Windows): take the broken pipe to be stdout's, the usual case
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
