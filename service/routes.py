"""The HTTP endpoints: each one parses, calls the domain (`storyboards`), and answers JSON."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, TypedDict, cast

import asyncpg
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from pgqueue import Job, Queue, QueueSettings, params
from service import auth, drain, media, queries, schemas, storyboards
from service.errors import ApiError, not_found
from service.event_hub import EventHub
from service.openapi import openapi_document
from service.payloads import MalformedPayload, StoryboardPayload
from service.settings import MAX_DRAIN_BUDGET_S, MIN_DRAIN_BUDGET_S, ServiceSettings
from service.stream_slots import StreamSlots

logger = logging.getLogger("service.api")

MAX_BIGINT = params.MAX_BIGINT
READY_TIMEOUT_S = 2.0  # seconds /readyz waits for the database
NOT_READY_MESSAGE = "the database is unavailable"
# The type a stored image is served as, from the extension the service gave it; browsers are
# told not to second-guess it (`nosniff`), so no stored bytes can be run as a page.
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
MEDIA_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


class AppState(TypedDict):
    """What the lifespan yields; Starlette hands a copy to every request as `request.state`."""

    pool: asyncpg.Pool
    queue: Queue
    settings: ServiceSettings
    queue_settings: QueueSettings  # PGQUEUE_*: what a drain's worker runs with
    events: EventHub  # wakes live-progress streams
    stream_slots: StreamSlots  # counts them, per user and in total
    drains: drain.Drains  # the drains this process runs: bounded, stopped with the server


def _state(request: Request) -> AppState:
    return cast(AppState, request.scope["state"])


async def _user(request: Request) -> auth.User:
    return await auth.authenticate(_state(request)["pool"], request.headers.get("authorization"))


async def read_body(request: Request) -> bytes:
    """The request body, refusing more than 1 MiB (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        size = params.whole_number(declared, 0, params.MAX_BIGINT)
        if size is None:
            raise ApiError(400, "bad_request", "bad Content-Length")
        if size > schemas.MAX_BODY_BYTES:
            raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > schemas.MAX_BODY_BYTES:  # chunked bodies carry no Content-Length
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(request: Request) -> bytes:
    """`read_body`, refusing (415) a declared charset other than UTF-8, the only one parsed."""
    _, _, parameters = request.headers.get("content-type", "").partition(";")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8", "us-ascii"):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the body must be UTF-8 JSON, not charset {charset[:40]!r}",
            )
    return await read_body(request)


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"the body exceeds {schemas.MAX_BODY_BYTES} bytes")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the database answers."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):  # covers the pool's reconnect too
            await _state(request)["pool"].fetchval(queries.PING)
    except Exception as exc:  # the probe's boundary: any failure to talk means "not ready"
        logger.warning("readiness check failed: %r", exc, extra={"action": "not_ready"})
        # No token guards this endpoint: the database's own words (names, hosts, roles)
        # stay in the log.
        return JSONResponse(
            {"error": {"code": "not_ready", "message": NOT_READY_MESSAGE, "details": []}},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


async def create_project(request: Request) -> Response:
    """POST /api/projects"""
    user = await _user(request)
    body = schemas.parse_body(schemas.ProjectIn, await read_json_body(request))
    project = await storyboards.create_project(_state(request)["pool"], user, body)
    return JSONResponse(
        project, status_code=201, headers={"Location": f"/api/projects/{project['id']}"}
    )


async def list_projects(request: Request) -> Response:
    """GET /api/projects"""
    user = await _user(request)
    return JSONResponse(
        {"projects": await storyboards.list_projects(_state(request)["pool"], user)}
    )


async def get_project(request: Request) -> Response:
    """GET /api/projects/{id}"""
    user = await _user(request)
    state = _state(request)
    project_id = storyboards.parse_project_id(request.path_params["project_id"])
    return JSONResponse(
        await storyboards.get_project(state["pool"], user, project_id, state["settings"])
    )


async def generate(request: Request) -> Response:
    """POST /api/projects/{id}/storyboards/generate"""
    user = await _user(request)
    state = _state(request)
    project_id = storyboards.parse_project_id(request.path_params["project_id"])
    body = schemas.parse_body(schemas.GenerateIn, await read_json_body(request), optional=True)
    answer = await storyboards.generate(
        state["pool"], state["queue"], state["settings"], user, project_id, body
    )
    return JSONResponse(answer, status_code=202)


async def regenerate(request: Request) -> Response:
    """POST /api/projects/{id}/storyboards/{shot_number}/regenerate"""
    user = await _user(request)
    state = _state(request)
    project_id = storyboards.parse_project_id(request.path_params["project_id"])
    shot_number = path_id(request, "shot_number", 1000, "shot")
    await read_body(request)  # no body is expected; still refuse oversized ones
    body = schemas.GenerateIn(shot_numbers=[shot_number], force=True)
    answer = await storyboards.generate(
        state["pool"], state["queue"], state["settings"], user, project_id, body
    )
    answer["job_id"] = answer["job_ids"][0]
    return JSONResponse(answer, status_code=202)


async def status(request: Request) -> Response:
    """GET /api/projects/{id}/storyboards/status"""
    user = await _user(request)
    state = _state(request)
    project_id = storyboards.parse_project_id(request.path_params["project_id"])
    return JSONResponse(
        await storyboards.project_status(
            state["pool"], state["queue"], user, project_id, state["settings"]
        )
    )


async def visible_job(state: AppState, user: auth.User, job_id: int) -> Job:
    """Job `job_id`, if `user` may see it (an admin, or the owner of its project); 404
    otherwise, as for a job that does not exist."""
    job = await state["queue"].get(job_id)
    if job is None:
        raise not_found("job")
    if user.is_admin:
        return job
    try:
        payload = StoryboardPayload.from_job(job)
    except MalformedPayload:
        # No project says whose it is, so it is nobody's: not found, like another's.
        raise not_found("job") from None
    if not await state["pool"].fetchval(queries.OWNS_PROJECT, payload.project_id, user.name):
        raise not_found("job")
    return job


async def get_job(request: Request) -> Response:
    """GET /api/jobs/{id}: the job, for the owner of its project or an admin."""
    user = await _user(request)
    state = _state(request)
    job = await visible_job(state, user, path_id(request, "job_id", MAX_BIGINT, "job"))
    answer = job_json(job)
    if not user.is_admin:
        # A traceback shows the worker's code and paths: admins only. Owners get the line
        # that says what went wrong.
        answer["last_error"] = last_line(job.last_error)
    return JSONResponse(answer)


def last_line(text: str | None) -> str | None:
    """The last non-blank line of `text` (of a traceback: the exception and its message)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else text


async def queue_stats(request: Request) -> Response:
    """GET /api/queue/stats (admins only)."""
    user = await _user(request)
    if not user.is_admin:
        raise ApiError(403, "forbidden", "queue statistics are for admins")
    stats = await _state(request)["queue"].stats()
    return JSONResponse(
        {
            "queues": {
                name: {
                    "waiting": s.waiting,
                    "delayed": s.delayed,
                    "active": s.active,
                    "completed": s.completed,
                    "failed": s.failed,
                    "cancelled": s.cancelled,
                }
                for name, s in stats.items()
            }
        }
    )


async def worker_drain(request: Request) -> Response:
    """GET or POST /api/worker/drain?budget_s=N: run storyboard jobs inside this request.

    For `CRON_SECRET` (what Vercel Cron sends as a bearer) or an admin token.
    """
    state = _state(request)
    settings = state["settings"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and drain.allowed_by_secret(settings, token.strip())):
        user = await _user(request)  # 401 without a valid token
        if not user.is_admin:
            raise ApiError(403, "forbidden", "the drain is for CRON_SECRET or admin tokens")
    budget_s = _budget_param(request, settings.drain_budget_s)
    answer = await state["drains"].run(settings, state["queue_settings"], budget_s, state["pool"])
    if answer is None:
        # Refused at once, having changed nothing: one more drain would hold another set of
        # server connections (or the server is stopping).
        drains = state["drains"]
        wait_s = drains.busy_for_s() or 0.0
        raise ApiError(
            503 if drains.stopping else 429,
            "stopping" if drains.stopping else "drain_running",
            "the API is stopping: call the drain again on another instance"
            if drains.stopping
            else f"{drains.limit} drain(s) already run in this API process, the most at once;"
            f" call again in {math.ceil(wait_s)} s",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
    return JSONResponse(answer)


def _budget_param(request: Request, default_s: float) -> float:
    raw = request.query_params.get("budget_s")
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not MIN_DRAIN_BUDGET_S <= value <= MAX_DRAIN_BUDGET_S:  # NaN fails both
        raise ApiError(
            400,
            "bad_request",
            f"budget_s must be a number of seconds within {MIN_DRAIN_BUDGET_S:g}-"
            f"{MAX_DRAIN_BUDGET_S:g}, got {raw[:40]!r}",
        )
    return value


async def image(request: Request) -> Response:
    """GET /media/{path}: a stored image (its URL is unguessable: it holds the project uuid)."""
    path = media.resolve(_state(request)["settings"].media_dir, request.path_params["path"])
    if path is None:
        raise not_found("image")
    media_type = MEDIA_TYPES.get(path.suffix.removeprefix("."), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=MEDIA_HEADERS)


async def openapi(request: Request) -> Response:
    """GET /openapi.json"""
    return JSONResponse(openapi_document())


def job_json(job: Job) -> dict[str, Any]:
    """A job as the API answers it."""
    return {
        "id": job.id,
        "queue": job.queue,
        "kind": job.kind,
        "state": job.state.value,
        "payload": job.payload,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "last_error": job.last_error,
        "progress": job.progress,
        "result": job.result,
        "run_at": job.run_at.isoformat(),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def path_id(request: Request, name: str, maximum: int, what: str) -> int:
    """The whole number in the path's `name`; anything else, or out of 1-`maximum` (beyond
    the database's integer types), is simply not found.

    Parsed here, not by Starlette's `int` convertor, which passes thousands of digits to
    `int()` and fails with a 500 where a 404 belongs.
    """
    value = params.whole_number(request.path_params[name], 1, maximum)
    if value is None:
        raise not_found(what)
    return value


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/api/projects", create_project, methods=["POST"]),
    Route("/api/projects", list_projects, methods=["GET"]),
    Route("/api/projects/{project_id}", get_project, methods=["GET"]),
    Route("/api/projects/{project_id}/storyboards/generate", generate, methods=["POST"]),
    Route(
        "/api/projects/{project_id}/storyboards/{shot_number}/regenerate",
        regenerate,
        methods=["POST"],
    ),
    Route("/api/projects/{project_id}/storyboards/status", status, methods=["GET"]),
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/queue/stats", queue_stats, methods=["GET"]),
    Route("/api/worker/drain", worker_drain, methods=["GET", "POST"]),
    Route("/media/{path:path}", image, methods=["GET"]),
]
