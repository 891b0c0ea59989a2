"""`dashboard`: pgqueue's dashboard served on its own by uvicorn, for operators without a host
application to mount it in. Sign-in takes the token in `PGQUEUE_DASHBOARD_TOKEN`; without one
it serves only with `--insecure-no-token` and only on a loopback address, where nobody but
this machine's users can reach it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import os
from collections.abc import AsyncIterator
from typing import Any

from pgqueue.cli.common import CommandError, Exit, check_schema
from pgqueue.database import Database
from pgqueue.queue import Queue

TOKEN_VARIABLE = "PGQUEUE_DASHBOARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001  # beside the service's API on 8000
POOL_MAX_SIZE = 4  # connections one dashboard holds at most: a few operators' pages at once


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dashboard`."""
    parser = commands.add_parser(
        "dashboard", help=f"serve the dashboard (sign-in with the token in {TOKEN_VARIABLE})"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"(default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT})")
    parser.add_argument(
        "--insecure-no-token",
        action="store_true",
        help=f"without {TOKEN_VARIABLE}: anyone who reaches it may act (loopback hosts only)",
    )
    parser.set_defaults(serve=serve)


def serve(args: argparse.Namespace, database: Database) -> Exit:
    """Check the token, the address and the schema, then serve until interrupted."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token and not args.insecure_no_token:
        raise CommandError(
            f"error: {TOKEN_VARIABLE} is not set: set it to the token operators sign in with "
            "(or, on a loopback address only, pass --insecure-no-token)"
        )
    if not token and not _is_loopback(args.host):
        raise CommandError(
            f"error: --insecure-no-token serves only on a loopback address (127.0.0.1, ::1, "
            f"localhost), not {args.host}: set {TOKEN_VARIABLE} to serve elsewhere"
        )
    try:
        import uvicorn
    except ImportError as exc:
        raise CommandError(
            f"error: the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'pgqueue[dashboard]'"
        ) from exc
    asyncio.run(_check(database))
    app = _app(database, token or None)
    where = f"http://{args.host}:{args.port}/"
    how = f"sign in with the token in {TOKEN_VARIABLE}" if token else "no sign-in (loopback only)"
    print(f"pgqueue dashboard on {where} ({how}); Ctrl-C stops it", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return Exit.OK


async def _check(database: Database) -> None:
    conn = await database.connect()
    try:
        await check_schema(conn)
    finally:
        await conn.close()


def _app(database: Database, token: str | None) -> Any:
    """The dashboard at the root, on a pool the app's lifespan opens and closes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Mount

    from pgqueue.dashboard import create_app

    held: dict[str, Queue] = {}

    def authorize(_request: Request, credential: str | None) -> bool:
        if token is None:
            return True
        # Constant-time: the comparison must not tell how much of a guess was right.
        return credential is not None and hmac.compare_digest(credential.encode(), token.encode())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool = await database.create_pool(min_size=1, max_size=POOL_MAX_SIZE)
        held["queue"] = Queue(pool)
        try:
            yield
        finally:
            await pool.close()

    dashboard = create_app(lambda _request: held["queue"], authorize=authorize)
    return Starlette(routes=[Mount("/", app=dashboard)], lifespan=lifespan)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
