"""The worker side: `registry`, with the storyboard handler, for `python -m pgqueue.worker`.

    python -m pgqueue.worker service.jobs:registry

One job generates one shot's storyboard: build the prompt, call the image provider within
`IMAGE_TIMEOUT_S`, write the image atomically under `MEDIA_DIR`, then, in one transaction fenced
by the job's lease, mark the storyboard `success` and, if it was the last shot of the
generation, set the project's step status. A job that fails for good marks its storyboard
`failed` the same way, with the error a person can read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import anyio.to_thread
import asyncpg
import httpx

from pgqueue import DoNotRetry, JobContext, Registry, RetryLater
from service import media, queries
from service.images import (
    CharacterRef,
    ImageError,
    ImageProvider,
    ImageRequest,
    PermanentImageError,
    RetryableImageError,
    create_provider,
)
from service.settings import ServiceSettings
from service.storyboards import JOB_KIND

logger = logging.getLogger("service.jobs")

POOL_MAX_SIZE = 5  # the handler's own reads; its fenced writes use the worker's pool
HTTP_MAX_CONNECTIONS = 50  # upstream connections shared by all of a worker's jobs


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerState:
    """What the registry's lifespan opens once per worker and hands to every job."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    provider: ImageProvider


def create_registry(settings: ServiceSettings | None = None) -> Registry:
    """A registry with the service's handlers.

    Args:
        settings: used as given; None reads `ServiceSettings()` from the environment when the
            worker starts (not at import, so importing this module has no side effects).
    """

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[WorkerState]:
        current = settings or ServiceSettings()
        current.check()
        dsn = current.database_url
        if dsn is None:
            # The worker's own CLI refuses to start without it; a registry opened some other
            # way must not quietly boot a database either.
            raise RuntimeError("DATABASE_URL is not set: the storyboard handlers need the database")
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_MAX_SIZE)
        assert pool is not None
        try:
            limits = httpx.Limits(max_connections=HTTP_MAX_CONNECTIONS)
            async with httpx.AsyncClient(limits=limits, follow_redirects=True) as client:
                yield WorkerState(current, pool, create_provider(current, client))
        finally:
            await pool.close()

    result = Registry(lifespan=lifespan)
    result.add(JOB_KIND, generate_storyboard)
    return result


async def generate_storyboard(ctx: JobContext) -> dict[str, Any]:
    """Handler of `storyboard.generate`: payload `{project_id, shot_number, generation}`."""
    state: WorkerState = ctx.state
    project_id = uuid.UUID(ctx.payload["project_id"])
    shot_number = int(ctx.payload["shot_number"])
    record = await state.pool.fetchrow(queries.SELECT_SHOT_FOR_JOB, project_id, shot_number)
    if record is None:
        return {"skipped": "the project or shot no longer exists"}
    if record["job_id"] != ctx.job.id:
        # A later generate or regenerate gave the storyboard to another job: stay out of it.
        return {"skipped": f"superseded by job {record['job_id']}"}
    if record["status"] == "success":
        # This attempt re-runs a job whose success committed but whose completion was lost
        # (e.g. the worker died in between): do not pay the upstream twice.
        return {"skipped": "already stored"}
    characters = json.loads(record["characters"])
    request = ImageRequest(
        shot_number=shot_number,
        description=record["description"],
        style=record["style"],
        aspect_ratio=record["aspect_ratio"],
        characters=tuple(CharacterRef(**c) for c in characters),
        request_id=f"storyboard-{project_id}-{shot_number}-{ctx.job.id}",
    )
    await ctx.progress(10, f"generating shot {shot_number}", shot_number=shot_number)
    try:
        image = await state.provider.generate(request)
        await ctx.progress(80, f"storing shot {shot_number}", shot_number=shot_number)
        relative = media.relative_path(project_id, shot_number, ctx.job.id, image.extension)
        await anyio.to_thread.run_sync(
            media.write_atomically, state.settings.media_dir, relative, image.data
        )
    except Exception as exc:
        await _failed(ctx, project_id, shot_number, exc)
    image_url = media.url_for(relative)
    async with ctx.transaction() as conn:
        await conn.execute(queries.LOCK_PROJECT, project_id)
        await conn.execute(
            queries.MARK_SUCCESS, project_id, shot_number, ctx.job.id, image_url, ctx.attempt
        )
        counts = await conn.fetchrow(queries.FINISH_PROJECT, project_id)
    await _report_done(ctx, shot_number, counts)
    return {"image_url": image_url, "bytes": len(image.data)}


async def _failed(
    ctx: JobContext, project_id: uuid.UUID, shot_number: int, exc: Exception
) -> NoReturn:
    """Record a failed attempt: on the last one, mark the storyboard `failed`; then raise.

    Raises the job outcome pgqueue understands: `DoNotRetry` for a refusal, `RetryLater` for
    an upstream's `Retry-After`, otherwise `exc` itself (the queue's backoff applies).
    """
    permanent = isinstance(exc, PermanentImageError)
    error = str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
    if permanent or ctx.attempt >= ctx.job.max_attempts:
        async with ctx.transaction() as conn:
            await conn.execute(queries.LOCK_PROJECT, project_id)
            await conn.execute(
                queries.MARK_FAILED, project_id, shot_number, ctx.job.id, error, ctx.attempt
            )
            counts = await conn.fetchrow(queries.FINISH_PROJECT, project_id)
        await _report_done(ctx, shot_number, counts, error=error)
    if permanent:
        raise DoNotRetry(error) from exc
    if isinstance(exc, RetryableImageError) and exc.retry_after_s is not None:
        raise RetryLater(error, delay_s=exc.retry_after_s) from exc
    raise exc


async def _report_done(
    ctx: JobContext, shot_number: int, counts: Any, *, error: str | None = None
) -> None:
    completed = counts["succeeded"] + counts["failed"] if counts else None
    total = counts["total"] if counts else None
    message = f"shot {shot_number} failed: {error}" if error else f"shot {shot_number} stored"
    await ctx.progress(100, message, shot_number=shot_number, completed=completed, total=total)


registry = create_registry()
