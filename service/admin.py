"""The queue's admin surface: `/api/jobs` (list, retry, cancel), `/api/queues` (list, pause,
resume), and pgqueue's dashboard mounted at `/dashboard` for admins.

Every answer comes from pgqueue's public `Queue` methods (`list_jobs`, `retry`, `cancel`,
`queues`, `pause`, `resume`); the service adds who may see what (`user_jobs`: a user's own
jobs, found through the service's index; a retry within the user's cap). Users see and act on
the storyboard jobs of their own projects (another's job answers 404, as on `GET /api/jobs/{id}`);
admins see all jobs, and alone see and pause queues.
"""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from pgqueue import Job, JobNotFound, JobState, JobStateConflict, Queue, QueueInfo, params
from pgqueue import dashboard as pgqueue_dashboard
from service import auth, user_jobs
from service.errors import ApiError, not_found
from service.payloads import JOB_KIND
from service.routes import MAX_BIGINT, AppState, job_json, last_line, path_id, visible_job

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def _state(request: Request) -> AppState:
    return cast(AppState, request.scope["state"])


async def _user(request: Request) -> auth.User:
    return await auth.authenticate(_state(request)["pool"], request.headers.get("authorization"))


async def _admin(request: Request, what: str) -> auth.User:
    user = await _user(request)
    if not user.is_admin:
        raise ApiError(403, "forbidden", f"{what} are for admins")
    return user


async def list_jobs(request: Request) -> Response:
    """GET /api/jobs?queue=&state=&kind=&limit=&before= : newest first, a page at a time."""
    user = await _user(request)
    state = _state(request)
    unknown = sorted(set(request.query_params) - {"queue", "state", "kind", "limit", "before"})
    if unknown:
        raise _bad(
            "query", f"unknown parameter {unknown[0]!r}: use queue, state, kind, limit, before"
        )
    queue_name = _text_param(request, "queue")
    kind = _text_param(request, "kind")
    job_state = _state_param(request)
    limit = _int_query(request, "limit", 1, MAX_LIMIT, None) or DEFAULT_LIMIT
    before = _int_query(request, "before", 1, MAX_BIGINT, None)
    if user.is_admin:
        jobs = await state["queue"].list_jobs(
            queue=queue_name, state=job_state, kind=kind, limit=limit, before=before
        )
    elif kind not in (None, JOB_KIND):
        jobs = []  # a user's jobs are storyboard jobs only
    else:
        jobs = await user_jobs.list_user_jobs(
            state["pool"],
            state["queue"],
            user,
            queue_name=queue_name,
            state=job_state,
            limit=limit,
            before=before,
        )
    return JSONResponse(
        {
            "jobs": [_job_answer(job, user) for job in jobs],
            "next": jobs[-1].id if len(jobs) == limit else None,
        }
    )


async def retry_job(request: Request) -> Response:
    """POST /api/jobs/{id}/retry: a failed or cancelled job, queued again (owner or admin);
    429 when it would take its owner past the cap of pending jobs, as a generate would."""
    user = await _user(request)
    state = _state(request)
    job = await _visible_job(request, user)
    try:
        retried = await user_jobs.retry(state["pool"], state["queue"], state["settings"], user, job)
    except JobNotFound:
        raise not_found("job") from None
    except JobStateConflict as exc:
        current = exc.job.state.value if exc.job is not None else "in another state"
        raise ApiError(
            409,
            "conflict",
            f"job {job.id} is {current}: only failed or cancelled jobs can be retried",
        ) from None
    return JSONResponse(_job_answer(retried, user))


async def cancel_job(request: Request) -> Response:
    """POST /api/jobs/{id}/cancel: queued: cancelled at once; running: within a heartbeat."""
    user = await _user(request)
    queue = _state(request)["queue"]
    job = await _visible_job(request, user)
    if job.state.is_terminal:
        raise _finished(job)
    cancelled = await queue.cancel(job.id)
    if cancelled is None:
        raise not_found("job")
    # Finished between the read and the cancel: it was not cancelled by this call.
    if cancelled.state.is_terminal and cancelled.state != JobState.CANCELLED:
        raise _finished(cancelled)
    return JSONResponse(_job_answer(cancelled, user))


async def list_queues(request: Request) -> Response:
    """GET /api/queues (admins): every queue's counts, pause, oldest wait and recent rate."""
    await _admin(request, "queues")
    infos = await _state(request)["queue"].queues()
    return JSONResponse({"queues": [queue_json(info) for info in infos]})


async def pause_queue(request: Request) -> Response:
    """POST /api/queues/{name}/pause (admins): no worker or drain claims from it until resumed."""
    await _admin(request, "queues")
    queue: Queue = _state(request)["queue"]
    return JSONResponse(queue_json(await queue.pause(_queue_param(request))))


async def resume_queue(request: Request) -> Response:
    """POST /api/queues/{name}/resume (admins)."""
    await _admin(request, "queues")
    queue: Queue = _state(request)["queue"]
    return JSONResponse(queue_json(await queue.resume(_queue_param(request))))


def queue_json(info: QueueInfo) -> dict[str, Any]:
    """A queue as `/api/queues` answers it."""
    stats = info.stats
    return {
        "name": info.queue,
        "paused": info.paused,
        "waiting": stats.waiting,
        "delayed": stats.delayed,
        "active": stats.active,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "oldest_waiting_s": (
            None if info.oldest_waiting_s is None else round(info.oldest_waiting_s, 3)
        ),
        "finished_last_5m": info.finished_last_5m,
    }


async def _visible_job(request: Request, user: auth.User) -> Job:
    """The job of the path, if `user` may see it (an admin, or the owner of its project);
    404 otherwise, as for a job that does not exist."""
    job_id = path_id(request, "job_id", MAX_BIGINT, "job")
    return await visible_job(_state(request), user, job_id)


def _job_answer(job: Job, user: auth.User) -> dict[str, Any]:
    answer = job_json(job)
    if not user.is_admin:
        # As GET /api/jobs/{id}: the traceback is for admins; owners get its last line.
        answer["last_error"] = last_line(job.last_error)
    return answer


def _finished(job: Job) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"job {job.id} is {job.state.value}: it has finished and cannot be cancelled",
    )


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", message, [{"field": field, "message": message}])


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not params.is_name(value):
        raise _bad(name, f"{name} must be 1-128 characters, with no NUL byte")
    return value


def _state_param(request: Request) -> JobState | None:
    value = request.query_params.get("state")
    if value is None or value == "":
        return None
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise _bad("state", f"state must be one of {names}; got {value[:40]!r}") from None


def _int_query(request: Request, name: str, low: int, high: int, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = params.whole_number(raw, low, high)
    if value is None:
        raise _bad(name, f"{name} must be a whole number within {low}-{high}, got {raw[:40]!r}")
    return value


def _queue_param(request: Request) -> str:
    name = str(request.path_params["name"])
    if not params.is_name(name):
        raise _bad("name", "a queue name is 1-128 characters, with no NUL byte")
    return name


async def _dashboard_admin(request: Request, token: str | None) -> bool:
    """The dashboard's check: the token the browser signed in with is an admin's."""
    if token is None:
        return False
    try:
        user = await auth.authenticate(_state(request)["pool"], f"Bearer {token}")
    except ApiError:
        return False
    return user.is_admin


DASHBOARD = pgqueue_dashboard.create_app(
    lambda request: _state(request)["queue"], authorize=_dashboard_admin, title="Storyboard queue"
)

ROUTES: list[BaseRoute] = [
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/api/queues", list_queues, methods=["GET"]),
    Route("/api/queues/{name}/pause", pause_queue, methods=["POST"]),
    Route("/api/queues/{name}/resume", resume_queue, methods=["POST"]),
    Mount("/dashboard", app=DASHBOARD),
]
