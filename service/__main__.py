"""`python -m service api | worker | create-token | budget | run | database-url`.

    api            the HTTP API (uvicorn) on HOST:PORT, or --host/--port
    worker         a worker with the service's handlers (= python -m pgqueue.worker
                   service.jobs:registry; further arguments are passed on)
    create-token   a new API token, printed alone on the last line
    budget         one user's daily budget: --per-day N, or --clear (back to the tier's)
    run            embedded Postgres (unless DATABASE_URL), migrations, API and a worker
    database-url   the database the other commands use: DATABASE_URL, else the URL of the
                   embedded server `run` started under ./.pgdata (what `make token`,
                   `make psql`, `make worker` and `make migrate` take)

`api`, `worker` and `create-token` need DATABASE_URL and say so when it is missing; only `run`
(what `make run` calls) starts an embedded server under `./.pgdata` when it is unset.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from pgqueue import Database, pooler_hint
from service import auth, errors
from service.settings import ServiceSettings

WORKER_REGISTRY = "service.jobs:registry"
STARTUP_FAILURE = 3  # uvicorn's exit status when the server could not start
MISSING_DATABASE_URL = (
    "error: DATABASE_URL is not set: give the service's database, e.g.\n"
    "  DATABASE_URL=postgresql://user@host:5432/app python -m service {command}\n"
    "(`make run` starts an embedded server for development)"
)


def _api(settings: ServiceSettings, args: argparse.Namespace) -> int:
    from pgqueue import configure_logging
    from service import serving
    from service.app import create_app

    configure_logging(args.log_level)
    try:
        app = create_app(settings)
    except ValidationError as exc:  # PGQUEUE_*, which the drain's worker runs with
        print(f"error: bad settings: {exc}", file=sys.stderr)
        return 2
    started = serving.run(
        app,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
        max_connections=settings.api_max_connections,
        access_log=args.access_log,
    )
    return 0 if started else STARTUP_FAILURE


def _worker(extra: Sequence[str]) -> int:
    """Become `python -m pgqueue.worker service.jobs:registry [extra]` (this process, exec'd).

    The worker's own entry point, not a call into its module: its flags, signals and exit
    status are exactly the daemon's, and the service depends on pgqueue's command, not on its
    internals.
    """
    # Unless told otherwise, take jobs from the queue the API puts storyboard jobs in.
    told = any(arg == "--queue" or arg.startswith("--queue=") for arg in extra)
    if not told and "PGQUEUE_QUEUES" not in os.environ:
        try:
            queue = ServiceSettings().queue
        except ValidationError as exc:
            print(f"error: bad settings: {exc}", file=sys.stderr)
            return 2
        extra = [*extra, "--queue", queue]
    command = [sys.executable, "-m", "pgqueue.worker", WORKER_REGISTRY, *extra]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 1  # not reached: execv replaces this process or raises


async def _create_token(database: Database, args: argparse.Namespace) -> str:
    conn = await database.connect()
    try:
        return await auth.create_token(conn, args.user, tier=args.tier, admin=args.admin)
    finally:
        await conn.close()


def _credits(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number of credits: {text!r}") from None
    if not value.is_finite() or not 0 <= value < 10**12:
        raise argparse.ArgumentTypeError(f"credits must be at least 0, got {text!r}")
    return value


async def _budget(settings: ServiceSettings, args: argparse.Namespace) -> Decimal | None:
    from service import budgets

    pool = await settings.database().create_pool(min_size=1, max_size=2)
    try:
        return await budgets.set_override(
            pool, settings, args.user, None if args.clear else args.per_day
        )
    finally:
        await pool.close()


def _database_url() -> int:
    url = os.environ.get("DATABASE_URL")
    if url:
        print(url)
        return 0
    from devserver.embedded import EmbeddedPostgres
    from service.launcher import EMBEDDED_DIR

    server = EmbeddedPostgres(EMBEDDED_DIR)
    if not server.is_running():
        print(
            f"error: DATABASE_URL is not set and no embedded server runs under ./{EMBEDDED_DIR}:"
            " start one with `make run` (in this directory), or set DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    print(server.url)
    return 0


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command line; unknown arguments are kept for `worker`."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", help="address to bind (HOST, default 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (PORT, default 8000)")
    api.add_argument("--log-level", default="INFO")
    api.add_argument("--access-log", action="store_true", help="log every request")
    commands.add_parser("worker", help="run a worker (options of python -m pgqueue.worker)")
    token = commands.add_parser("create-token", help="create an API token")
    token.add_argument("--user", required=True, help="the user the token acts as")
    token.add_argument("--tier", choices=("free", "pro"), default="free")
    token.add_argument("--admin", action="store_true", help="may read any job and the stats")
    commands.add_parser("run", help="embedded Postgres, migrations, API and a worker")
    commands.add_parser("database-url", help="print the URL of the database in use")
    budget = commands.add_parser("budget", help="set or clear one user's daily budget")
    budget.add_argument("--user", required=True, help="the user whose budget it is")
    amount = budget.add_mutually_exclusive_group(required=True)
    amount.add_argument(
        "--per-day", type=_credits, metavar="N", help="credits the user may spend per UTC day"
    )
    amount.add_argument("--clear", action="store_true", help="back to the tier's budget")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args, extra = parse_args(argv)
    if args.command == "worker":
        return _worker(extra)
    if args.command == "database-url":
        return _database_url()
    try:
        settings = ServiceSettings()
        settings.check()
    except (ValidationError, ValueError) as exc:
        print(f"error: bad settings: {exc}", file=sys.stderr)
        return 2
    if args.command in ("api", "create-token", "budget") and settings.database_url is None:
        print(MISSING_DATABASE_URL.format(command=args.command), file=sys.stderr)
        return 2
    if args.command == "api":
        return _api(settings, args)
    if args.command == "create-token":
        try:
            token = asyncio.run(_create_token(settings.database(), args))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except errors.POOLER_MISMATCH as exc:
            print(f"error: {pooler_hint(exc) or exc}", file=sys.stderr)
            return 2
        print(f"token for user {args.user!r} (tier {args.tier}{', admin' if args.admin else ''}):")
        print(token)
        return 0
    if args.command == "budget":
        try:
            amount = asyncio.run(_budget(settings, args))
        except errors.POOLER_MISMATCH as exc:
            print(f"error: {pooler_hint(exc) or exc}", file=sys.stderr)
            return 2
        limit = "no limit" if amount is None else f"{amount} credits per UTC day"
        print(f"budget of user {args.user!r}: {limit}")
        return 0
    from service.launcher import Launcher

    return Launcher(settings).run()


if __name__ == "__main__":
    sys.exit(main())
