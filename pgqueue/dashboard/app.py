"""The dashboard's Starlette app: server-rendered pages on `Queue`'s public methods, and the few
statements only the dashboard needs (bulk actions by filter, the payload search, run time
percentiles, the states a page polls, its sessions) straight from `pgqueue.store`.

Signing in: the pages are opened by browser navigations, which cannot carry a bearer header.
The sign-in form posts a credential once; the app checks it with the host's `authorize`
callback and opens a session (pgqueue/dashboard/sessions.py): an HttpOnly, SameSite=Strict
cookie scoped to the dashboard's path holds a random key, never the credential, and the
session ends after `session_max_age_s` (in the database, whatever the browser keeps) or at
sign-out. On every request the app hands the session's credential to `authorize` again, so
a credential the host revokes stops working at once. HttpOnly: no script (an injected one
included) can read the cookie. SameSite=Strict: a page on another site cannot make the
browser send it, so a forged form post arrives without it; POSTs (sign-in and sign-out
included) also refuse a foreign `Origin`, for browsers that ignore SameSite. Every change is
a POST (GETs change nothing), confirmed in the page before it is sent, and answered with a
redirect to the page it came from, which reads the new state: the change shows at once.

The cookie is `Secure` when the request arrived over https as the ASGI server reports it.
Behind a proxy that terminates TLS, either tell the server to trust the proxy's
`X-Forwarded-Proto` (uvicorn: `--proxy-headers --forwarded-allow-ips=<the proxy>`, or
`FORWARDED_ALLOW_IPS`) or pass `secure_cookie=True`.

A bulk action (retry or cancel every job of the listing's filter) is a GET of a confirmation
page that counts the jobs it would change, then a POST of that page's form, checked like every
POST; its one statement stops at the newest job counted, so a job enqueued after the operator
read the count is left alone.

Live: the overview and a job's page poll `live` (a JSON answer: the queues' counts, the listed
jobs' states, the workers, the server's clock) every 2 s while the tab is visible, and write it
into the page. A poll rather than server-sent events: each answer is a few indexed reads, and
no connection stays open per tab on the server (nor a LISTEN per tab in Postgres), through any
proxy; a hidden tab asks nothing.

Why not the studio's way (a page shell whose script calls the JSON API with a token from
localStorage): the dashboard must work for any application on pgqueue, whose JSON API (if it
has one) pgqueue does not know, and a token in localStorage is readable by any script that
runs on the page. Server-rendered pages also need no script to show anything.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pgqueue import errors, models, params, reports, store
from pgqueue.dashboard import filters, sessions, timefmt, web
from pgqueue.dashboard.chart import finished_chart
from pgqueue.dashboard.live import live_answer
from pgqueue.queue import Queue

HERE = Path(__file__).resolve().parent
COOKIE = "pgqueue_dashboard"
MAX_CREDENTIAL_CHARS = 500  # a longer sign-in value is refused before the callback sees it
PAGE_SIZE = 50  # jobs per page of the listing
MAX_JOB_ID = params.MAX_BIGINT
PAGE_HEADERS = {
    # The page's own files only: no inline script or style, nothing from another origin.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it Chromium sends `Origin: null` with the page's own form posts,
    # and the origin check below could not tell them from a sandboxed page's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# What a finished action says on the page it leads back to (by code: no text from the URL).
NOTICES = {
    "retried": "Job {job} is queued again with a fresh attempt budget.",
    "cancelled": "Job {job} is cancelled.",
    "cancel-requested": "Job {job} is running: its worker cancels it within a heartbeat.",
    "paused": "Queue {queue} is paused: no worker starts its jobs until it is resumed.",
    "resumed": "Queue {queue} is resumed.",
    "signed-out": "Signed out.",
    "bulk-retried": "{count} job(s) queued again with a fresh attempt budget.",
    "bulk-cancelled": "{count} job(s) cancelled.",
    "bulk-stopping": "{count} job(s) cancelled; {stopping} running job(s) stop within a heartbeat.",
}
MAX_LIVE_JOBS = 200  # job ids one live poll asks about (a page lists 50)
BULK_ACTIONS = ("retry", "cancel")
RETRYABLE = (models.JobState.FAILED, models.JobState.CANCELLED)
CANCELLABLE = (models.JobState.QUEUED, models.JobState.RUNNING)

Authorize = Callable[[Request, str | None], Awaitable[bool] | bool]
QueueSource = Queue | Callable[[Request], Queue]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    queue: QueueSource,
    *,
    authorize: Authorize,
    title: str = "pgqueue",
    session_max_age_s: float = sessions.DEFAULT_MAX_AGE_S,
    secure_cookie: bool | None = None,
) -> Starlette:
    """The dashboard, to mount anywhere (`Mount("/dashboard", app=create_app(...))`).

    Args:
        queue: the `Queue` to show, or a function of the request giving one (e.g. from the
            host's lifespan state). Its database keeps the sessions (pgqueue schema v10).
        authorize: the host's check, called on every request with the request and the
            credential the browser signed in with (None before it has, or once its session
            ended): True lets the request through. It may be async. A host with its own
            sessions can ignore the credential and look at the request instead.
        title: shown in the page's header.
        session_max_age_s: how long a sign-in lasts.
        secure_cookie: True: the session cookie is always `Secure` (behind a TLS proxy whose
            scheme the server is not told); None: when the request came over https.
    """
    if not (math.isfinite(session_max_age_s) and 1 <= session_max_age_s <= 30 * 86400):
        raise ValueError(
            f"session_max_age_s must be within 1 s and 30 days, got {session_max_age_s!r}"
        )
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
    )
    templates.filters["when"] = timefmt.when
    templates.filters["ago"] = timefmt.ago
    templates.filters["duration"] = timefmt.duration
    templates.filters["pretty"] = _pretty

    def queue_of(request: Request) -> Queue:
        return queue if isinstance(queue, Queue) else queue(request)

    def db_of(request: Request) -> store.Executor:
        # The sessions live beside the jobs: the Queue's own pool, not a public method of it
        # (sessions are the dashboard's business, not an application's).
        return queue_of(request)._pool

    async def session_credential(request: Request) -> str | None:
        """The credential of the request's session, once per request."""
        if "pgqueue_credential" not in request.scope:
            cookie = request.cookies.get(COOKIE)
            request.scope["pgqueue_credential"] = (
                None if cookie is None else await sessions.credential_of(db_of(request), cookie)
            )
        found: str | None = request.scope["pgqueue_credential"]
        return found

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        base = web.mount_path(request)
        page = templates.get_template(name).render(
            base=base,
            title=title,
            request=request,
            notice=_notice(request),
            # Every page of a live session offers to sign out (read by the guard, if it ran).
            signed_in=request.scope.get("pgqueue_credential") is not None,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)

    async def allowed(request: Request) -> bool:
        verdict = authorize(request, await session_credential(request))
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, change: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if change and not web.same_origin(request):
                return render(request, "error.html", 403, message="cross-site request refused")
            if not await allowed(request):
                signed_in = await session_credential(request) is not None
                page = render(
                    request,
                    "sign_in.html",
                    403 if signed_in else 401,
                    refused=signed_in,
                )
                if not signed_in and COOKIE in request.cookies:  # ended, or unknown
                    page.delete_cookie(COOKIE, path=f"{web.mount_path(request)}/")
                return page
            try:
                return await handler(request)
            except _Refused as refused:
                return render(request, "error.html", refused.status, message=refused.message)

        return endpoint

    async def overview(request: Request) -> Response:
        q = queue_of(request)
        found = _filter(request.query_params)
        before = _before(request)
        searched_to = None
        if found.payload is None:
            jobs = await q.list_jobs(
                limit=PAGE_SIZE,
                queue=found.queue,
                state=found.state,
                kind=found.kind,
                before=before,
            )
        else:
            jobs, searched_to = await store.list_jobs_containing(
                db_of(request), found, limit=PAGE_SIZE, before=before
            )
        queues = await q.queues()
        charts = {
            info.queue: finished_chart(
                await q.finished_per_minute(queue=info.queue),
                label=f"jobs of {info.queue} finished per minute, last hour",
            )
            for info in queues
        }
        if len(jobs) == PAGE_SIZE:
            older = web.query(request, before=jobs[-1].id)
        elif searched_to is not None:  # a payload search's window ended: the next one below
            older = web.query(request, before=searched_to)
        else:
            older = None
        return render(
            request,
            "overview.html",
            live=True,
            queues=queues,
            schedules=await q.schedules(),
            rate_limits=await q.rate_limits(),
            budgets=await q.budgets(),
            charts=charts,
            workers=await q.workers(),
            durations=await store.kind_durations(db_of(request)),
            duration_window_s=store.DURATION_WINDOW_S,
            jobs=jobs,
            filters=filters.as_fields(found),
            bulk_query=urlencode(filters.as_fields(found)),
            search_window=store.SEARCH_WINDOW_IDS if found.payload is not None else None,
            searched_to=searched_to,
            states=[state.value for state in models.JobState],
            older=older,
            newest=web.query(request, before=None) if before is not None else None,
            here=web.here(request),
            now=datetime.now(UTC),
        )

    async def job_page(request: Request) -> Response:
        job = await queue_of(request).get(_job_id(request))
        if job is None:
            raise _Refused(404, "no such job (retention may have deleted it)")
        attempts = await queue_of(request).attempts(job.id)
        return render(
            request,
            "job.html",
            live=True,
            job=job,
            attempts=attempts,
            here=web.here(request),
            now=datetime.now(UTC),
        )

    async def retry(request: Request) -> Response:
        job_id = _job_id(request)
        try:
            await queue_of(request).retry(job_id)
        except errors.JobNotFound:
            raise _Refused(404, "no such job") from None
        except errors.JobStateConflict as exc:
            raise _Refused(409, str(exc)) from None
        return await web.back(request, done="retried", job=job_id)

    async def cancel(request: Request) -> Response:
        job_id = _job_id(request)
        job = await queue_of(request).cancel(job_id)
        if job is None:
            raise _Refused(404, "no such job")
        if job.state == models.JobState.RUNNING:
            return await web.back(request, done="cancel-requested", job=job_id)
        if job.state != models.JobState.CANCELLED or job.finished_at is None:
            raise _Refused(409, f"job {job_id} is {job.state.value}: it has finished already")
        return await web.back(request, done="cancelled", job=job_id)

    async def pause(request: Request) -> Response:
        name = _queue_name(request)
        await queue_of(request).pause(name)
        return await web.back(request, done="paused", queue=name)

    async def resume(request: Request) -> Response:
        name = _queue_name(request)
        await queue_of(request).resume(name)
        return await web.back(request, done="resumed", queue=name)

    async def bulk_confirm(request: Request) -> Response:
        """The confirmation of a bulk action: how many jobs of the filter it changes now."""
        action = request.path_params["action"]
        if action not in BULK_ACTIONS:
            raise _Refused(404, "no such action: retry or cancel")
        found = _filter(request.query_params)
        count = store.count_retryable if action == "retry" else store.count_cancellable
        jobs, newest = await count(db_of(request), found)
        return render(
            request,
            "bulk.html",
            action=action,
            jobs=jobs,
            states=" or ".join(found.states(RETRYABLE if action == "retry" else CANCELLABLE)),
            up_to=newest,
            described=filters.describe(found),
            fields=filters.as_fields(found),
            back=f"{web.mount_path(request)}/?{urlencode(filters.as_fields(found))}",
        )

    async def bulk_act(request: Request) -> Response:
        """A confirmed bulk action: one statement, on the jobs up to the newest one counted."""
        action = request.path_params["action"]
        if action not in BULK_ACTIONS:
            raise _Refused(404, "no such action: retry or cancel")
        form = await web.form_fields(request)
        found = _filter(form)
        up_to = params.whole_number(form.get("up_to"), 1, MAX_JOB_ID)
        if up_to is None:
            raise _Refused(400, "up_to must be the newest job id the confirmation counted")
        back = f"{web.mount_path(request)}/?{urlencode(filters.as_fields(found))}"
        if action == "retry":
            count = await store.retry_matching(db_of(request), found, up_to)
            return web.redirect(back, done="bulk-retried", count=count)
        cancelled, stopping = await store.cancel_matching(db_of(request), found, up_to)
        done = "bulk-stopping" if stopping else "bulk-cancelled"
        return web.redirect(back, done=done, count=cancelled, stopping=stopping)

    async def live(request: Request) -> Response:
        """What the page's script polls: the queues' counts, the states of the jobs the page
        lists (`ids`, comma-separated), the workers, and the server's clock."""
        job_ids = _job_ids(request.query_params.get("ids", ""))
        answer = await live_answer(queue_of(request), db_of(request), job_ids)
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    async def sign_in_form(request: Request) -> Response:
        return render(request, "sign_in.html", refused=False)

    async def sign_in(request: Request) -> Response:
        if not web.same_origin(request):
            return render(request, "error.html", 403, message="cross-site request refused")
        form = await web.form_fields(request)
        credential = form.get("token", "").strip()
        if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            return render(request, "sign_in.html", 400, refused=False, invalid=True)
        # Checked before it is kept: a wrong token answers here, not on the next page.
        verdict = authorize(request, credential)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            return render(request, "sign_in.html", 403, refused=True)
        key = await sessions.open_session(db_of(request), credential, session_max_age_s)
        response = RedirectResponse(f"{web.mount_path(request)}/", status_code=303)
        response.set_cookie(
            COOKIE,
            key,
            max_age=int(session_max_age_s),
            path=f"{web.mount_path(request)}/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" if secure_cookie is None else secure_cookie,
        )
        return response

    async def sign_out(request: Request) -> Response:
        # Checked like every POST: otherwise any site could sign an admin out.
        if not web.same_origin(request):
            return render(request, "error.html", 403, message="cross-site request refused")
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            await sessions.close_session(db_of(request), cookie)  # copies of it end too
        signed_out = f"{web.mount_path(request)}/sign-in?done=signed-out"
        response = RedirectResponse(signed_out, status_code=303)
        response.delete_cookie(COOKIE, path=f"{web.mount_path(request)}/")
        return response

    return Starlette(
        routes=[
            Route("/", guarded(overview), methods=["GET"]),
            Route("/jobs/{job_id}", guarded(job_page), methods=["GET"]),
            Route("/jobs/{job_id}/retry", guarded(retry, change=True), methods=["POST"]),
            Route("/jobs/{job_id}/cancel", guarded(cancel, change=True), methods=["POST"]),
            Route("/queues/{name}/pause", guarded(pause, change=True), methods=["POST"]),
            Route("/queues/{name}/resume", guarded(resume, change=True), methods=["POST"]),
            Route("/bulk/{action}", guarded(bulk_confirm), methods=["GET"]),
            Route("/bulk/{action}", guarded(bulk_act, change=True), methods=["POST"]),
            Route("/live", guarded(live), methods=["GET"]),
            Route("/sign-in", sign_in_form, methods=["GET"]),
            Route("/sign-in", sign_in, methods=["POST"]),
            Route("/sign-out", sign_out, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )


def _filter(values: Any) -> reports.JobFilter:
    """The jobs filter of a query string or form; a bad one answers 400, naming it."""
    try:
        return filters.read(values)
    except filters.BadFilter as exc:
        raise _Refused(400, str(exc)) from None


def _before(request: Request) -> int | None:
    """The listing's page: only jobs below this id (None: the newest)."""
    before = request.query_params.get("before", "").strip()
    if not before:
        return None
    job_id = params.whole_number(before, 1, MAX_JOB_ID)
    if job_id is None:
        raise _Refused(400, f"before must be a job id, got {before[:40]!r}")
    return job_id


def _job_ids(text: str) -> list[int]:
    """The comma-separated job ids of a live poll; a bad one answers 400."""
    parts = [part for part in text.split(",") if part]
    if len(parts) > MAX_LIVE_JOBS:
        raise _Refused(400, f"ids: at most {MAX_LIVE_JOBS} job ids")
    ids = [params.whole_number(part, 1, MAX_JOB_ID) for part in parts]
    if any(job_id is None for job_id in ids):
        raise _Refused(400, "ids must be job ids separated by commas")
    return [job_id for job_id in ids if job_id is not None]


def _job_id(request: Request) -> int:
    job_id = params.whole_number(request.path_params["job_id"], 1, MAX_JOB_ID)
    if job_id is None:
        raise _Refused(404, "no such job")
    return job_id


def _queue_name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not params.is_name(name):
        raise _Refused(400, "a queue name is 1-128 characters, with no NUL byte")
    return name


def _notice(request: Request) -> str | None:
    template = NOTICES.get(request.query_params.get("done", ""))
    if template is None:
        return None
    numbers = {
        name: params.whole_number(request.query_params.get(name), 0, MAX_JOB_ID) or 0
        for name in ("count", "stopping")
    }
    return template.format(
        job=request.query_params.get("job", "")[:20],
        queue=request.query_params.get("queue", "")[:128],
        **numbers,
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
