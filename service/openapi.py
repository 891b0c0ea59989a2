"""The OpenAPI document of the API, served at `/openapi.json`.

Request schemas come from the pydantic models, so they cannot drift from the validation;
responses are described by hand, field for field as in CONTRACT.md.
"""

from __future__ import annotations

import functools
from typing import Any

from service import schemas

_ERROR = {"$ref": "#/components/schemas/Error"}
_STORYBOARD = {
    "type": "object",
    "properties": {
        "shot_number": {"type": "integer"},
        "status": {"enum": ["pending", "generating", "success", "failed"]},
        "image_url": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "job_id": {"type": ["integer", "null"]},
        "progress": {"type": ["object", "null"]},
        "wait_reason": {
            "enum": [*schemas.WAIT_REASONS, None],
            "description": "why a generating shot waits; null while its call is in flight "
            "and once it is finished",
        },
        "next_attempt_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when the shot's next attempt may start; null when only its turn "
            "or a free slot decides",
        },
    },
}
_DRAINED = {
    "type": "object",
    "properties": {
        **{
            name: {"type": "integer"}
            for name in ("ran", "succeeded", "failed", "retried", "released", "lost")
        },
        "elapsed_s": {"type": "number"},
    },
}
_DRAIN = {
    "summary": "run runnable storyboard jobs inside this request (CRON_SECRET or admin)",
    "security": [{"bearer": []}],
    "parameters": [
        {
            "name": "budget_s",
            "in": "query",
            "required": False,
            "schema": {"type": "number", "minimum": 1, "maximum": 300},
        }
    ],
    "responses": {
        "200": {
            "description": "what the attempts came to",
            "content": {"application/json": {"schema": _DRAINED}},
        },
        **{
            str(code): {
                "description": "error",
                "content": {"application/json": {"schema": _ERROR}},
            }
            # 429: a drain runs in this API process already; 503: the API is stopping
            for code in (400, 401, 403, 429, 503)
        },
    },
}
_STATUS = {
    "type": "object",
    "properties": {
        "project_id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["pending", "generating", "completed", "partial", "failed"]},
        **{
            name: {"type": "integer"}
            for name in ("total", "pending", "generating", "succeeded", "failed")
        },
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "done": {"type": "boolean"},
        "storyboards": {"type": "array", "items": _STORYBOARD},
        "eta_s": {
            "type": ["number", "null"],
            "minimum": 0,
            "description": "estimated seconds until done: the slowest generating shot's "
            "place in the queue's line over the queue's throughput of the last minutes, "
            "slowed to the project's share of the running slots; null when unknown",
        },
        "spent": {
            "type": "number",
            "minimum": 0,
            "description": "credits the upstream calls of the project's storyboards cost",
        },
    },
}
_GENERATED = {
    "type": "object",
    "properties": {
        "job_ids": {"type": "array", "items": {"type": "integer"}},
        "total": {"type": "integer"},
        "queued": {"type": "integer"},
    },
}
_PROJECT = {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}
_ID = {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ERROR, "error") for s in statuses}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"required": required, "content": {"application/json": {"schema": ref}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    components: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array"},
                    },
                }
            },
        }
    }
    for model in (schemas.ProjectIn, schemas.GenerateIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "up"}}}},
        "/readyz": {
            "get": {
                "summary": "readiness: the database answers",
                "responses": {"200": {"description": "ready"}, **_errors(503)},
            }
        },
        "/api/projects": {
            "post": {
                "summary": "create a project",
                "security": secured,
                "requestBody": _body("ProjectIn"),
                "responses": {
                    "201": _json(_PROJECT, "the project"),
                    **_errors(400, 401, 413, 415, 422),
                },
            },
            "get": {
                "summary": "the caller's projects",
                "security": secured,
                "responses": {"200": _json({"type": "object"}, "projects"), **_errors(401)},
            },
        },
        "/api/projects/{project_id}": {
            "get": {
                "summary": "a project with its shots and storyboards",
                "security": secured,
                "parameters": [_ID],
                "responses": {"200": _json(_PROJECT, "the project"), **_errors(401, 404)},
            }
        },
        "/api/projects/{project_id}/storyboards/generate": {
            "post": {
                "summary": "generate storyboards (idempotent while work is pending)",
                "security": secured,
                "parameters": [_ID],
                "requestBody": _body("GenerateIn", required=False),
                "responses": {
                    "202": _json(_GENERATED, "enqueued"),
                    **_errors(400, 401, 404, 413, 415, 422, 429),
                },
            }
        },
        "/api/projects/{project_id}/storyboards/{shot_number}/regenerate": {
            "post": {
                "summary": "regenerate one shot's storyboard",
                "security": secured,
                "parameters": [
                    _ID,
                    {
                        "name": "shot_number",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    },
                ],
                "responses": {"202": _json(_GENERATED, "enqueued"), **_errors(401, 404, 429)},
            }
        },
        "/api/projects/{project_id}/storyboards/status": {
            "get": {
                "summary": "generation status",
                "security": secured,
                "parameters": [_ID],
                "responses": {"200": _json(_STATUS, "status"), **_errors(401, 404)},
            }
        },
        "/api/jobs/{job_id}": {
            "get": {
                "summary": "a job (its project's owner, or an admin)",
                "security": secured,
                "parameters": [
                    {
                        "name": "job_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "responses": {"200": _json({"type": "object"}, "the job"), **_errors(401, 404)},
            }
        },
        "/api/queue/stats": {
            "get": {
                "summary": "queue statistics (admins)",
                "security": secured,
                "responses": {"200": _json({"type": "object"}, "stats"), **_errors(401, 403)},
            }
        },
        "/api/worker/drain": dict.fromkeys(("get", "post"), _DRAIN),
    }
    paths.update(_admin_paths(secured))
    components_with_security = {
        "schemas": components,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Storyboard service", "version": "0.1.0"},
        "paths": paths,
        "components": components_with_security,
    }


_QUEUE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "paused": {"type": "boolean"},
        **{
            name: {"type": "integer"}
            for name in ("waiting", "delayed", "active", "completed", "failed", "cancelled")
        },
        "finished_last_5m": {"type": "integer"},
        "oldest_waiting_s": {"type": ["number", "null"]},
    },
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_QUEUE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}


def _query_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _admin_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The paths of service/admin.py: the job listing, retry and cancel, and the queues."""
    text = {"type": "string", "minLength": 1, "maxLength": 128}
    states = {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}
    page = {
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": {"type": "object"}},
            "next": {"type": ["integer", "null"]},
        },
    }
    return {
        "/api/jobs": {
            "get": {
                "summary": "jobs newest first, a page at a time (users: their own; admins: all)",
                "security": secured,
                "parameters": [
                    _query_param("queue", text),
                    _query_param("state", states),
                    _query_param("kind", text),
                    _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                    _query_param("before", {"type": "integer", "minimum": 1}),
                ],
                "responses": {"200": _json(page, "a page of jobs"), **_errors(400, 401)},
            }
        },
        "/api/jobs/{job_id}/retry": {
            "post": {
                "summary": "a failed or cancelled job, queued again with a fresh attempt budget",
                "security": secured,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json({"type": "object"}, "the job, queued"),
                    # 429: it would take its owner past the cap of pending jobs
                    **_errors(401, 404, 409, 429),
                },
            }
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {
                "summary": "cancel a job: queued at once, running within a heartbeat",
                "security": secured,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json({"type": "object"}, "the job"),
                    **_errors(401, 404, 409),
                },
            }
        },
        "/api/queues": {
            "get": {
                "summary": "every queue's counts, pause, oldest wait and recent rate (admins)",
                "security": secured,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"queues": {"type": "array", "items": _QUEUE}},
                        },
                        "the queues",
                    ),
                    **_errors(401, 403),
                },
            }
        },
        **{
            f"/api/queues/{{name}}/{action}": {
                "post": {
                    "summary": summary,
                    "security": secured,
                    "parameters": [_QUEUE_NAME],
                    "responses": {"200": _json(_QUEUE, "the queue"), **_errors(400, 401, 403)},
                }
            }
            for action, summary in (
                ("pause", "no worker or drain claims from the queue until resumed (admins)"),
                ("resume", "claims take the queue's jobs again (admins)"),
            )
        },
    }
