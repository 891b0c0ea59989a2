"""The worker side: `registry`, with the storyboard handler, for `python -m pgqueue.worker`.

    python -m pgqueue.worker service.jobs:registry

One job generates one shot's storyboard: build the prompt, call the image provider within
`IMAGE_TIMEOUT_S` (once per job: the answer becomes a checkpoint of the job, which later
attempts read instead of calling), write the image atomically under `MEDIA_DIR`, then, in one
transaction fenced by the job's lease, mark the storyboard `success` and, if it was the last
shot of the generation, set the project's step status.

The handler only says how an attempt failed (`DoNotRetry`, `RetryLater`, or the exception
itself); whether that was the last attempt is pgqueue's to decide. The registry's `failed` and
`stalled` hooks hear the outcome pgqueue wrote and, for a job that failed for good, mark its
storyboard `failed` with the error a person can read (`failures.fail_for_good`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import asyncpg
import httpx

from pgqueue import (
    DoNotRetry,
    Event,
    JobCancelled,
    JobContext,
    JobState,
    LeaseLost,
    Queue,
    Registry,
    RetryLater,
    UpstreamDown,
)
from service import failures, media, metrics, queries, upkeep
from service.images import (
    CharacterRef,
    GeneratedImage,
    ImageProvider,
    ImageRequest,
    PermanentImageError,
    RetryableImageError,
    create_provider,
)
from service.payloads import JOB_KIND, MalformedPayload, StoryboardPayload
from service.settings import ADAPTIVE_PERIOD_S, IMAGE_RATE_LIMIT_KEY, ServiceSettings

logger = logging.getLogger("service.jobs")

POOL_MAX_SIZE = 5  # the handler's own reads and the hooks' writes; fenced writes use the worker's
HTTP_MAX_CONNECTIONS = 50  # upstream connections shared by all of a worker's jobs
# The job states that end a job for good with no image: the storyboard fails with them.
FAILED_FOR_GOOD = (JobState.FAILED, JobState.CANCELLED)
THROTTLE_STATUS = 429  # the upstream's "too many requests": pause every call, not one job
# Seconds added to IMAGE_RATE_LIMIT's period in pgqueue. pgqueue counts starts by their claim's
# now(); the upstream counts calls as they arrive, after the handler's lead (its reads, its
# first progress write, a new connection): 3-20 ms warm, up to 170 ms for a worker's first
# jobs on two busy cores (measured, 3 worker processes). A window longer by that keeps the
# upstream's own count within N; at 20/s it costs a fifth of the rate, at 60/min 0.4%.
RATE_WINDOW_GUARD_S = 0.25
IMAGE_CHECKPOINT = "image"  # the job's checkpoint holding the upstream's image bytes


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerState:
    """What the registry's lifespan opens once per worker and hands to every job."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    provider: ImageProvider


def create_registry(
    settings: ServiceSettings | None = None, *, pool: asyncpg.Pool | None = None
) -> Registry:
    """A registry with the service's handlers.

    Args:
        settings: used as given; None reads `ServiceSettings()` from the environment when the
            worker starts (not at import, so importing this module has no side effects).
        pool: for the handlers' own reads and the hooks' writes, kept open (the API's, for a
            drain: no pool of its own per call); None: a pool of `POOL_MAX_SIZE` opened and
            closed with the worker.
    """

    # The hooks get only the event; they reach the database through the state the lifespan
    # opened (the newest, should one registry serve several workers in one process).
    opened: list[WorkerState] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[WorkerState]:
        current = settings or ServiceSettings()
        current.check()
        if current.database_url is None:
            # The worker's own CLI refuses to start without it; a registry opened some other
            # way must not quietly boot a database either.
            raise RuntimeError("DATABASE_URL is not set: the storyboard handlers need the database")
        own = pool is None
        handler_pool = (
            await current.database().create_pool(min_size=1, max_size=POOL_MAX_SIZE)
            if pool is None
            else pool
        )
        try:
            await apply_rate_limit(handler_pool, current)
            limits = httpx.Limits(max_connections=HTTP_MAX_CONNECTIONS)
            # Every upstream call is counted where it is made (storyboard_upstream_*).
            transport = metrics.CountingTransport(httpx.AsyncHTTPTransport(limits=limits))
            async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
                state = WorkerState(current, handler_pool, create_provider(current, client))
                opened.append(state)
                try:
                    yield state
                finally:
                    opened.remove(state)
        finally:
            if own:
                await handler_pool.close()

    async def on_job_ended(event: Event) -> None:
        if not opened:
            # The worker is not (or no longer) open: the read-side repair will see the job.
            logger.warning(
                "job %s ended while the storyboard worker was closed; its storyboard is "
                "repaired when read",
                event.job_id,
                extra={"action": "hook_skipped", "job_id": event.job_id},
            )
            return
        await fail_storyboard(opened[-1].pool, event)

    result = Registry(lifespan=lifespan)
    result.add(JOB_KIND, generate_storyboard)
    result.on("failed", on_job_ended)
    result.on("stalled", on_job_ended)
    upkeep.register(result)
    return result


async def apply_rate_limit(pool: asyncpg.Pool, settings: ServiceSettings) -> None:
    """Give the upstream's rate-limit key what the settings say: `IMAGE_RATE_LIMIT` (or none,
    unset), its window widened by `RATE_WINDOW_GUARD_S`, learnt beneath it when
    `IMAGE_RATE_ADAPTIVE`; and the breaker of `IMAGE_BREAKER` (or none, `off`).

    Every worker and drain does it as it opens, before its first claim: the limit lives in
    the database, so the fleet shares one limit (and a learnt rate or an open breaker survive
    a worker's restart). Workers started with different values leave the last one's in
    force; give them all the same.
    """
    queue = Queue(pool)
    limit = settings.rate_limit
    if settings.image_rate_adaptive:
        if limit is None:
            await queue.set_adaptive_rate_limit(IMAGE_RATE_LIMIT_KEY, period_s=ADAPTIVE_PERIOD_S)
        else:
            await queue.set_adaptive_rate_limit(
                IMAGE_RATE_LIMIT_KEY,
                ceiling=limit.limit,
                period_s=limit.period_s + RATE_WINDOW_GUARD_S,
            )
    elif limit is None:
        await queue.remove_rate_limit(IMAGE_RATE_LIMIT_KEY)
    else:
        await queue.set_rate_limit(
            IMAGE_RATE_LIMIT_KEY, limit.limit, limit.period_s + RATE_WINDOW_GUARD_S
        )
    breaker = settings.breaker
    if breaker is None:
        await queue.remove_breaker(IMAGE_RATE_LIMIT_KEY)
    else:
        await queue.set_breaker(
            IMAGE_RATE_LIMIT_KEY,
            threshold=breaker.threshold,
            window_s=breaker.window_s,
            open_s=breaker.open_s,
        )


async def fail_storyboard(pool: asyncpg.Pool, event: Event) -> bool:
    """The `failed` and `stalled` hook: the storyboard of a job that failed for good fails.

    Acts only on a job whose row says it ended for good (`failed` or `cancelled`): a `failed`
    event with a retry carries the job `queued` (its project's live streams are woken: the
    shot waits again), and a `stalled` event for a lease this worker lost carries it as
    claimed (`running`): someone else moves those on.

    Args:
        pool: where the storyboards are.
        event: the worker's event.

    Returns:
        Whether a storyboard was marked `failed` (False when the event is not final, or the
        fence found the storyboard already taken over or finished).
    """
    job = event.job
    if job is None or job.kind != JOB_KIND:
        return False
    try:
        payload = StoryboardPayload.from_job(job)
    except MalformedPayload:
        return False  # no storyboard to fail: the job's own error says what was wrong
    if job.state is JobState.QUEUED:
        # Requeued (a retry, a throttle, a wait for the breaker): the shot waits again, and
        # its card should say why now, not at the project's next change.
        await pool.execute(queries.NOTIFY_PROJECT_CHANGED, str(payload.project_id))
        return False
    if job.state not in FAILED_FOR_GOOD:
        return False
    async with pool.acquire() as conn:
        counts = await failures.fail_for_good(conn, payload, job)
    if counts is None:
        return False
    logger.info(
        "storyboard of shot %d failed with job %s (%s)",
        payload.shot_number,
        job.id,
        job.state,
        extra={"action": "storyboard_failed", "job_id": job.id, "project_status": counts["status"]},
    )
    return True


async def generate_storyboard(ctx: JobContext) -> dict[str, Any]:
    """Handler of `storyboard.generate` (payload: `StoryboardPayload`)."""
    state: WorkerState = ctx.state
    started = time.monotonic()
    try:
        payload = StoryboardPayload.from_job(ctx.job)
    except MalformedPayload as exc:
        raise DoNotRetry(str(exc)) from exc  # no attempt can read it better
    project_id, shot_number = payload.project_id, payload.shot_number
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
    # The shot stops waiting: its project's live streams re-read the status (a card that read
    # "waiting for a free slot" says "generating" now). A notification, not a write.
    await state.pool.execute(queries.NOTIFY_PROJECT_CHANGED, str(project_id))
    characters = json.loads(record["characters"])
    request = ImageRequest(
        shot_number=shot_number,
        description=record["description"],
        style=record["style"],
        aspect_ratio=record["aspect_ratio"],
        characters=tuple(CharacterRef(**c) for c in characters),
        request_id=f"storyboard-{project_id}-{shot_number}-{ctx.job.id}",
        # A regenerate is a new generation: the offline renderer draws a new composition.
        seed=f"{project_id}:{shot_number}:{payload.generation}",
        generation=payload.generation,
    )
    await _progress(ctx, 10, f"generating shot {shot_number}", shot_number=shot_number)
    # The answer's bytes are stored (a checkpoint of the job) the moment they arrive, before
    # anything else can fail: an attempt after a failure of ours (the media directory, the
    # database, a lost lease, a killed worker) finds them there and never calls again. Until
    # then, a call cut short is repeated with the same Idempotency-Key, which the upstream
    # answers without charging twice. The format is the bytes' signature, read again here.
    called = False

    async def call() -> bytes:
        nonlocal called
        called = True
        return await _generate(ctx, state, request, started)

    data = await ctx.checkpoint_bytes(IMAGE_CHECKPOINT, call)
    if not called:
        # An earlier attempt bought this image and was charged IMAGE_COST for it: this one
        # spends nothing of the user's budget.
        await ctx.charge(0)
    image = GeneratedImage.from_bytes(data)
    # The image is paid for and kept: nothing but the lease (and a cancel) may stop us storing
    # it, so progress cannot fail the attempt.
    await _progress(ctx, 80, f"storing shot {shot_number}", shot_number=shot_number)
    relative = media.relative_path(project_id, shot_number, ctx.job.id, image.extension)
    await anyio.to_thread.run_sync(
        media.write_atomically, state.settings.media_dir, relative, image.data
    )
    image_url = media.url_for(relative)
    async with ctx.transaction() as conn:
        await conn.execute(queries.LOCK_PROJECT, project_id)
        stored = await conn.fetchval(
            queries.MARK_SUCCESS, project_id, shot_number, ctx.job.id, image_url, ctx.attempt
        )
        counts = await conn.fetchrow(queries.FINISH_PROJECT, project_id)
    if stored is not None:
        # Committed: this image is the shot's now, so older ones (regenerate, force) go.
        await _delete_superseded(state, project_id, shot_number, ctx.job.id)
    await _report_done(ctx, shot_number, counts)
    return {"image_url": image_url, "bytes": len(image.data)}


async def _generate(
    ctx: JobContext, state: WorkerState, request: ImageRequest, started: float
) -> bytes:
    """The upstream call of one attempt: the image's bytes, or the exception that says how
    the attempt failed (`DoNotRetry`, `RetryLater`, or a retryable error for pgqueue's backoff).
    """
    try:
        image = await state.provider.generate(request)
    except PermanentImageError as exc:
        await ctx.charge(0)  # an error answer buys nothing: IMAGE_COST is an image's price
        raise DoNotRetry(str(exc)) from exc
    except RetryableImageError as exc:
        if not exc.throttled:
            # (A throttle gives its attempt back, and pgqueue charges a given-back attempt
            # nothing unless told: no write here to delay the fleet-wide pause.)
            await ctx.charge(0)
        if exc.retry_after_s is not None:
            throttle = exc.status == THROTTLE_STATUS
            # A 429 is the upstream rate limiting every caller: the throttle pauses every
            # job's calls and spends no attempt, so its bound is the storyboard's time limit,
            # counted from the generate (the job's enqueue) on the database's clock. Any other
            # Retry-After is this attempt's: it counts from this attempt's start. A wait that
            # would take the storyboard past STORYBOARD_TIMEOUT_S fails it now, saying why,
            # instead of leaving it `generating` longer than the rule allows.
            waited_s = time.monotonic() - started
            if throttle and ctx.job.started_at is not None:
                waited_s += (ctx.job.started_at - ctx.job.created_at).total_seconds()
            limit_s = state.settings.storyboard_timeout_s
            if waited_s + exc.retry_after_s > limit_s:
                since = "the generate" if throttle else "this attempt"
                raise DoNotRetry(
                    f"{exc}; the upstream asked to retry after {math.ceil(exc.retry_after_s)} s,"
                    f" which with the {waited_s:.0f} s since {since} is longer than a"
                    f" storyboard waits (STORYBOARD_TIMEOUT_S={limit_s:g} s)"
                ) from exc
            if throttle:
                raise RetryLater(str(exc), throttle_s=exc.retry_after_s) from exc
            raise RetryLater(str(exc), delay_s=exc.retry_after_s) from exc
        if exc.upstream_down:
            # The upstream is failing (5xx, a time-out, no connection), not this shot: the
            # breaker counts it, and while it is open the shots wait without spending attempts.
            raise UpstreamDown(str(exc)) from exc
        raise  # pgqueue's backoff applies; its message is the last line of last_error
    return image.data


async def _delete_superseded(
    state: WorkerState, project_id: uuid.UUID, shot_number: int, job_id: int
) -> None:
    # After the commit: a failure here leaves a stale file behind, never a lost image.
    try:
        deleted = await anyio.to_thread.run_sync(
            media.delete_superseded, state.settings.media_dir, project_id, shot_number, job_id
        )
    except OSError as exc:
        logger.warning(
            "job %s: superseded images of shot %d not deleted: %r",
            job_id,
            shot_number,
            exc,
            extra={"action": "superseded_not_deleted", "job_id": job_id},
        )
        return
    if deleted:
        logger.info(
            "job %s: deleted %d superseded image(s) of shot %d",
            job_id,
            len(deleted),
            shot_number,
            extra={"action": "superseded_deleted", "job_id": job_id},
        )


async def _report_done(ctx: JobContext, shot_number: int, counts: Any) -> None:
    completed = counts["succeeded"] + counts["failed"] if counts else None
    total = counts["total"] if counts else None
    await _progress(
        ctx,
        100,
        f"shot {shot_number} stored",
        shot_number=shot_number,
        completed=completed,
        total=total,
    )


async def _progress(ctx: JobContext, percent: float, message: str, **data: Any) -> None:
    """`ctx.progress`, best-effort: a failed write is logged and the job goes on.

    Progress is for people watching; the storyboard's own writes are what count. A lost
    lease or a cancel still stops the handler (those are answers, not failures to write).
    """
    try:
        await ctx.progress(percent, message, **data)
    except (LeaseLost, JobCancelled):
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        logger.warning(
            "job %s: progress %g%% not written (%r); going on",
            ctx.job.id,
            percent,
            exc,
            extra={"action": "progress_not_written", "job_id": ctx.job.id},
        )


registry = create_registry()
