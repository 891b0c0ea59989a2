"""`create_app(settings)`: the Starlette application of the storyboard API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from pgqueue import Queue, QueueSettings
from service import (
    admin,
    docs,
    drain,
    errors,
    event_hub,
    events,
    jobs,
    metrics,
    routes,
    serving,
    shutdown,
    studio,
)
from service.settings import ServiceSettings
from service.stream_slots import StreamSlots

POOL_MAX_SIZE = 10  # connections per API process
POOL_CLOSE_TIMEOUT_S = 5.0  # seconds the pool may take to close at shutdown
STREAM_SHARE = 0.75  # of the connections a process serves, what live-progress streams may hold


def stream_limit(max_connections: int) -> int:
    """Most live-progress streams one process holds: a share of the connections it serves, so
    that other requests (`/healthz`, a status read) still find one when streams are many."""
    return max(1, int(serving.connection_limit(max_connections) * STREAM_SHARE))


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
    drains = drain.Drains()
    stopping = shutdown.Shutdown()
    # The server's stop (`serving.ApiServer`) ends the drains before it waits for requests.
    stopping.on_start(drains.stop)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[routes.AppState]:
        pool = await database.create_pool(min_size=1, max_size=POOL_MAX_SIZE)
        try:
            async with event_hub.open_hub(database) as hub:
                yield routes.AppState(
                    pool=pool,
                    queue=Queue(
                        pool, default_queue=settings.queue, max_attempts=settings.max_attempts
                    ),
                    settings=settings,
                    queue_settings=queue_settings,
                    events=hub,
                    stream_slots=StreamSlots(
                        settings.stream_max_per_user, stream_limit(settings.api_max_connections)
                    ),
                    drains=drains,
                )
        finally:
            # A connection stuck on a dead link (a read the streams gave up on) would hold the
            # graceful close, and the process's exit, for ever.
            try:
                async with asyncio.timeout(POOL_CLOSE_TIMEOUT_S):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    app = Starlette(
        routes=[
            *routes.ROUTES,
            *events.ROUTES,
            *admin.ROUTES,
            *metrics.ROUTES,
            *docs.ROUTES,
            *studio.ROUTES,
        ],
        # The service's kinds on its queue: their series are on /metrics before any job ends.
        middleware=metrics.middleware((settings.queue, kind) for kind in jobs.registry.kinds),
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
    app.state.shutdown = stopping
    return app
