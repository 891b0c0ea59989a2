"""The OpenAPI document of the API, served at `/openapi.json` (and read by `/docs`).

Every route of the API is in it (the HTML pages, `/`, `/docs` and `/dashboard`, are not: they
are no API), each answer with a schema, each operation with a short snake_case `operationId`
that generated clients name their functions after: renaming one breaks those clients, so they
stay. Request schemas come from the pydantic models, so they cannot drift from the validation;
response schemas are in `service.openapi_schemas`.
"""

from __future__ import annotations

import functools
from typing import Any

from service import schemas
from service.openapi_schemas import PROJECT_ID, STREAM_EVENTS, components, ref

VERSION = "0.1.0"
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_PROJECT_ID = {
    "name": "project_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "example": PROJECT_ID,
}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "example": 42,
}
_SHOT_NUMBER = {
    "name": "shot_number",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
    "example": 1,
}
_QUEUE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    "example": "default",
}
# Per status: when it is answered, and an example answer (its usual code).
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("bad request: a parameter out of range", "bad_request", "budget_s must be 1-300"),
    401: ("no valid bearer token", "unauthorized", "a valid bearer token is required"),
    403: ("the token may not do this (admins only)", "forbidden", "this is for admins"),
    404: ("no such thing, or another user's", "not_found", "project not found"),
    409: ("the job's state does not allow it", "conflict", "job 42 is succeeded"),
    413: ("the body exceeds 1 MiB", "payload_too_large", "the body exceeds 1048576 bytes"),
    415: ("the body is not UTF-8 JSON", "unsupported_media_type", "the body must be UTF-8"),
    422: ("the body does not fit the schema", "validation_error", "the body is invalid"),
    429: ("too many jobs pending for this user", "too_many_pending", "too many pending"),
    503: ("the database is unavailable", "not_ready", "the database is unavailable"),
}
_VALIDATION_DETAIL = {"loc": ["title"], "message": "String should have at least 1 character"}
_PROJECT_EXAMPLE = {
    "title": "Night shift",
    "style": "noir",
    "aspect_ratio": "16:9",
    "characters": [{"name": "Ann", "description": "a tired detective in a grey coat"}],
    "shots": [
        {
            "shot_number": 1,
            "description": "rain on the window",
            "duration_seconds": 2.5,
            "characters": ["Ann"],
        }
    ],
}
_DOCUMENT = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {
        "openapi": {"type": "string"},
        "info": {"type": "object", "additionalProperties": True},
        "paths": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}
_METRICS_EXAMPLE = '# TYPE pgqueue_jobs gauge\npgqueue_jobs{queue="default",state="waiting"} 0.0\n'
_EVENTS_EXAMPLE = (
    'event: status\ndata: {"project_id":"' + PROJECT_ID + '","status":"generating",...}\n\n'
    ": heartbeat\n\n"
    'event: done\ndata: {"project_id":"' + PROJECT_ID + '","status":"completed",...}\n\n'
)


def _json(schema: str, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _errors(*statuses: int) -> dict[str, Any]:
    answers = {}
    for status in statuses:
        description, code, message = _ERRORS[status]
        details = [{**_VALIDATION_DETAIL, "type": "string_too_short"}] if status == 422 else []
        example = {"error": {"code": code, "message": message, "details": details}}
        answers[str(status)] = _json("Error", description, example)
    return answers


def _body(name: str, *, required: bool = True, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": ref(name)}
    if example is not None:
        media["example"] = example
    return {"required": required, "content": {"application/json": media}}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    secured: bool = True,
    **more: Any,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if secured:
        operation["security"] = _BEARER
    operation.update(more)
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _events_response() -> dict[str, Any]:
    names = ", ".join(f"`{event}`" for event in STREAM_EVENTS)
    return {
        "description": "Server-Sent Events, each an `event:` line and a `data:` line of JSON; "
        f"the events are {names}, their data as `StreamEvent` describes (by event name: "
        + "; ".join(f"`{event}`: {text}" for event, (_, _, text) in STREAM_EVENTS.items())
        + "). A comment line (`: heartbeat`) at least every 15 s. After `done`, `timeout` or "
        "`error` the stream ends: a client should close it then rather than reconnect.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string", "description": "the event stream's text"},
                "example": _EVENTS_EXAMPLE,
                # What OpenAPI 3.2 calls `itemSchema`: the schema of each event, for tools
                # that read it; 3.1 validators only accept it as an extension.
                "x-itemSchema": ref("StreamEvent"),
            }
        },
    }


def _service_paths() -> dict[str, Any]:
    """Health, the document itself, metrics and media: no token (metrics: optional)."""
    return {
        "/healthz": {
            "get": _operation(
                "healthz",
                "liveness: the process answers",
                {"200": _json("Health", "up", {"status": "ok"})},
                tag="service",
                secured=False,
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "readiness: the database answers",
                {"200": _json("Health", "ready", {"status": "ready"}), **_errors(503)},
                tag="service",
                secured=False,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "get_openapi",
                "this document",
                {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": _DOCUMENT}},
                    }
                },
                tag="service",
                secured=False,
            )
        },
        "/metrics": {
            "get": _operation(
                "get_metrics",
                "Prometheus metrics (a token only when METRICS_TOKEN is set)",
                {
                    "200": {
                        "description": "Prometheus text format 0.0.4",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": _METRICS_EXAMPLE,
                            }
                        },
                    },
                    **_errors(401),
                },
                tag="service",
                secured=False,
                security=[{}, {"bearer": []}],
            )
        },
        "/media/{path}": {
            "get": _operation(
                "get_image",
                "a stored image, at the `image_url` a storyboard names",
                {
                    "200": {
                        "description": "the image's bytes, as the upstream sent them",
                        "content": {
                            media_type: {"schema": {"type": "string", "format": "binary"}}
                            for media_type in ("image/png", "image/jpeg", "image/webp")
                        },
                    },
                    **_errors(404),
                },
                tag="service",
                secured=False,
                parameters=[
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "description": "the rest of the image URL (it may hold `/`)",
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
    }


def _project_paths() -> dict[str, Any]:
    """Projects, their generation, status and live events."""
    return {
        "/api/projects": {
            "post": _operation(
                "create_project",
                "create a project with its characters and shots",
                {
                    "201": _json("Project", "the project"),
                    **_errors(400, 401, 413, 415, 422),
                },
                tag="projects",
                requestBody=_body("ProjectIn", example=_PROJECT_EXAMPLE),
            ),
            "get": _operation(
                "list_projects",
                "the caller's projects, newest first",
                {"200": _json("ProjectList", "the projects"), **_errors(401)},
                tag="projects",
            ),
        },
        "/api/projects/{project_id}": {
            "get": _operation(
                "get_project",
                "a project with its characters, shots and storyboards",
                {"200": _json("Project", "the project"), **_errors(401, 404)},
                tag="projects",
                parameters=[_PROJECT_ID],
            )
        },
        "/api/projects/{project_id}/storyboards/generate": {
            "post": _operation(
                "generate_storyboards",
                "generate the storyboards (idempotent while work is pending)",
                {
                    "202": _json("Generated", "enqueued"),
                    **_errors(400, 401, 404, 413, 415, 422, 429),
                },
                tag="projects",
                parameters=[_PROJECT_ID],
                requestBody=_body("GenerateIn", required=False, example={"force": False}),
            )
        },
        "/api/projects/{project_id}/storyboards/{shot_number}/regenerate": {
            "post": _operation(
                "regenerate_storyboard",
                "generate one shot's storyboard again",
                {"202": _json("Regenerated", "enqueued"), **_errors(401, 404, 413, 429)},
                tag="projects",
                parameters=[_PROJECT_ID, _SHOT_NUMBER],
            )
        },
        "/api/projects/{project_id}/storyboards/status": {
            "get": _operation(
                "get_status",
                "the generation's status",
                {"200": _json("Status", "the status"), **_errors(401, 404)},
                tag="projects",
                parameters=[_PROJECT_ID],
            )
        },
        "/api/projects/{project_id}/storyboards/events": {
            "get": _operation(
                "stream_events",
                "the generation's status, live (Server-Sent Events)",
                # 429 too_many_streams past STREAM_MAX_PER_USER open streams, or past the
                # share of the server's connections that streams may hold.
                {
                    "200": _events_response(),
                    "204": {
                        "description": "a reconnect with `Last-Event-ID: done` while the"
                        " project is still done: nothing more to stream (an EventSource stops)"
                    },
                    **_errors(401, 404, 429),
                },
                tag="projects",
                parameters=[_PROJECT_ID],
            )
        },
    }


def _drain(operation_id: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        "run runnable storyboard jobs inside this request (CRON_SECRET or admin)",
        {"200": _json("Drained", "what the attempts came to"), **_errors(400, 401, 403, 429, 503)},
        tag="jobs",
        description="For serverless platforms without a worker daemon: answers within "
        "budget_s + 2 s; jobs still running then go back to the queue without spending an "
        "attempt.",
        parameters=[
            _query(
                "budget_s",
                {"type": "number", "minimum": 1, "maximum": 300},
                "seconds to run for (default DRAIN_BUDGET_S)",
            )
        ],
    )


def _job_paths() -> dict[str, Any]:
    """Jobs, queues and the drain."""
    text = {"type": "string", "minLength": 1, "maxLength": 128}
    states = ref("JobState")
    return {
        "/api/jobs": {
            "get": _operation(
                "list_jobs",
                "jobs newest first, a page at a time (users: their own; admins: all)",
                {"200": _json("JobPage", "a page of jobs"), **_errors(400, 401)},
                tag="jobs",
                parameters=[
                    _query("queue", text, "only this queue's"),
                    _query("state", states, "only jobs in this state"),
                    _query("kind", text, "only this kind's"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 200}, "default 50"
                    ),
                    _query("before", {"type": "integer", "minimum": 1}, "the previous `next`"),
                ],
            )
        },
        "/api/jobs/{job_id}": {
            "get": _operation(
                "get_job",
                "a job (its project's owner, or an admin)",
                {"200": _json("Job", "the job"), **_errors(401, 404)},
                tag="jobs",
                parameters=[_JOB_ID],
            )
        },
        "/api/jobs/{job_id}/retry": {
            "post": _operation(
                "retry_job",
                "a failed or cancelled job, queued again with a fresh attempt budget",
                # 429: it would take its owner past the cap of pending jobs
                {"200": _json("Job", "the job, queued"), **_errors(401, 404, 409, 429)},
                tag="jobs",
                parameters=[_JOB_ID],
            )
        },
        "/api/jobs/{job_id}/cancel": {
            "post": _operation(
                "cancel_job",
                "cancel a job: queued at once, running within a heartbeat",
                {"200": _json("Job", "the job"), **_errors(401, 404, 409)},
                tag="jobs",
                parameters=[_JOB_ID],
            )
        },
        "/api/queue/stats": {
            "get": _operation(
                "get_queue_stats",
                "every queue's counts by state (admins)",
                {"200": _json("QueueStats", "the counts"), **_errors(401, 403)},
                tag="queues",
            )
        },
        "/api/queues": {
            "get": _operation(
                "list_queues",
                "every queue's counts, pause, oldest wait and recent rate (admins)",
                {"200": _json("QueueList", "the queues"), **_errors(401, 403)},
                tag="queues",
            )
        },
        "/api/queues/{name}/pause": {
            "post": _operation(
                "pause_queue",
                "no worker or drain claims from the queue until resumed (admins)",
                {"200": _json("Queue", "the queue"), **_errors(400, 401, 403)},
                tag="queues",
                parameters=[_QUEUE_NAME],
            )
        },
        "/api/queues/{name}/resume": {
            "post": _operation(
                "resume_queue",
                "claims take the queue's jobs again (admins)",
                {"200": _json("Queue", "the queue"), **_errors(400, 401, 403)},
                tag="queues",
                parameters=[_QUEUE_NAME],
            )
        },
        "/api/worker/drain": {
            "post": _drain("drain"),
            # Cron callers that can only send GET (Vercel Cron) get the same operation.
            "get": _drain("drain_get"),
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    found = components()
    for model in (schemas.ProjectIn, schemas.GenerateIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Storyboard service",
            "version": VERSION,
            "description": "Storyboards generated shot by shot on pgqueue. Every `/api/` call "
            "needs `Authorization: Bearer <token>` (`python -m service create-token`). Errors "
            'are `Error`: `{"error": {"code", "message", "details"}}`.',
        },
        "tags": [
            {"name": "projects", "description": "projects, their storyboards and progress"},
            {"name": "jobs", "description": "the queue's jobs, and the drain"},
            {"name": "queues", "description": "the queues (admins)"},
            {"name": "service", "description": "health, metrics, media and this document"},
        ],
        "paths": {**_project_paths(), **_job_paths(), **_service_paths()},
        "components": {
            "schemas": found,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
