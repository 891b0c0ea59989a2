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
            for code in (400, 401, 403)
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
