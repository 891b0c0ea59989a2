"""`create_app(settings)`: the Starlette application of the storyboard API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from pgqueue import Queue, QueueSettings
from service import admin, errors, events, metrics, routes, studio
from service.settings import ServiceSettings

POOL_MAX_SIZE = 10  # connections per API process


def create_app(settings: ServiceSettings) -> Starlette:
    """The API, on the database of `settings.database_url` (which must be set).

    The lifespan opens one asyncpg pool and a `Queue` on it, and yields them as the
    `routes.AppState` that every request sees as `request.state`.
    """
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (DATABASE_URL)")
    settings.check()
    database = settings.database()
    # Read (and checked) at start: a drain runs a worker with the PGQUEUE_* settings.
    queue_settings = QueueSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[routes.AppState]:
        pool = await database.create_pool(min_size=1, max_size=POOL_MAX_SIZE)
        try:
            async with events.open_hub(database) as hub:
                yield routes.AppState(
                    pool=pool,
                    queue=Queue(
                        pool, default_queue=settings.queue, max_attempts=settings.max_attempts
                    ),
                    settings=settings,
                    queue_settings=queue_settings,
                    events=hub,
                )
        finally:
            await pool.close()

    return Starlette(
        routes=[*routes.ROUTES, *events.ROUTES, *admin.ROUTES, *metrics.ROUTES, *studio.ROUTES],
        middleware=metrics.middleware(),
        lifespan=lifespan,
        exception_handlers={
            errors.ApiError: errors.handle_api_error,
            HTTPException: errors.handle_http_exception,
            **dict.fromkeys(errors.DATABASE_UNAVAILABLE, errors.handle_database_unavailable),
            **dict.fromkeys(errors.POOLER_MISMATCH, errors.handle_pooler_mismatch),
            **dict.fromkeys(errors.CUT_CONNECTION, errors.handle_cut_connection),
            # Starlette's outermost middleware runs this one and still re-raises, so the
            # traceback is logged by the server.
            Exception: errors.handle_unexpected,
        },
    )
