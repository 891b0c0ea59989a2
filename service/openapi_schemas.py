"""The response schemas of the OpenAPI document (`components.schemas`), field for field as the
handlers answer (CONTRACT.md), with an example each.

Request schemas are not here: they come from the pydantic models (`service.schemas`), so they
cannot drift from the validation. A field is `required` when every answer carries it, so a
generated client's types say which fields may be missing (none of the answers leave one out;
`null` is a value, said by the type). Objects stay open (`additionalProperties` unset): a later
field must not break an older client.
"""

from __future__ import annotations

from typing import Any

from service import schemas

PROJECT_ID = "0b7a4c1e-3f55-4d0f-9a55-6c1f0e7d2a91"
WHEN = "2026-12-03T12:00:00+00:00"


def ref(name: str) -> dict[str, str]:
    """A `$ref` to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: dict[str, Any], *, example: Any = None, description: str = ""
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    if example is not None:
        schema["examples"] = [example]
    return schema


def _counts(*names: str) -> dict[str, Any]:
    return {name: {"type": "integer", "minimum": 0} for name in names}


_INT = {"type": "integer"}
_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_WHEN = {"type": "string", "format": "date-time"}
_NULLABLE_WHEN = {"type": ["string", "null"], "format": "date-time"}
_JSON_OBJECT = {"type": "object", "additionalProperties": True}
QUEUE_COUNTS = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled"]
STORYBOARD_STATES = ["pending", "generating", "success", "failed"]
PROJECT_STATES = ["pending", "generating", "completed", "partial", "failed"]

_ERROR_EXAMPLE = {
    "error": {"code": "not_found", "message": "project not found", "details": []},
}
_STORYBOARD_FIELDS: dict[str, Any] = {
    "shot_number": {"type": "integer", "minimum": 1, "maximum": 1000},
    "status": ref("StoryboardState"),
    "image_url": {**_NULLABLE_TEXT, "description": "the stored image (`GET` it), once success"},
    "error": {**_NULLABLE_TEXT, "description": "why the last generation failed"},
    "attempts": {"type": "integer", "minimum": 0},
    "job_id": {"type": ["integer", "null"], "description": "the current generation's job"},
    "progress": {
        "type": ["object", "null"],
        "additionalProperties": True,
        "description": "what the running attempt reported (free-form, the handler's)",
    },
}
_STORYBOARD_EXAMPLE = {
    "shot_number": 1,
    "status": "generating",
    "image_url": None,
    "error": None,
    "attempts": 1,
    "job_id": 42,
    "progress": None,
}
_SUMMARY_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "title": _TEXT,
    "style": _TEXT,
    "aspect_ratio": ref("AspectRatio"),
    "status": ref("ProjectState"),
    "generation": {"type": "integer", "minimum": 0},
    "created_at": _WHEN,
    "updated_at": _WHEN,
}
_SUMMARY_EXAMPLE = {
    "id": PROJECT_ID,
    "title": "Night shift",
    "style": "noir",
    "aspect_ratio": "16:9",
    "status": "pending",
    "generation": 0,
    "created_at": WHEN,
    "updated_at": WHEN,
}
_STATUS_EXAMPLE = {
    "project_id": PROJECT_ID,
    "status": "generating",
    "total": 1,
    "pending": 0,
    "generating": 1,
    "succeeded": 0,
    "failed": 0,
    "percent": 0,
    "done": False,
    "storyboards": [
        {**_STORYBOARD_EXAMPLE, "wait_reason": "queued", "next_attempt_at": None},
    ],
    "eta_s": 12,
    "spent": 0.0,
}
_JOB_EXAMPLE = {
    "id": 42,
    "queue": "default",
    "kind": "storyboard.generate",
    "state": "queued",
    "payload": {"project_id": PROJECT_ID, "shot_number": 1, "generation": 1},
    "priority": 0,
    "attempts": 0,
    "max_attempts": 3,
    "last_error": None,
    "progress": None,
    "result": None,
    "run_at": WHEN,
    "created_at": WHEN,
    "started_at": None,
    "finished_at": None,
}
_QUEUE_EXAMPLE = {
    "name": "default",
    "paused": False,
    **dict.fromkeys(QUEUE_COUNTS, 0),
    "waiting": 3,
    "oldest_waiting_s": 1.25,
    "finished_last_5m": 12,
}


def _event(name: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    # One Server-Sent Event as a client's parser hands it over: its name and its parsed data.
    return {
        "type": "object",
        "description": description,
        "required": ["event", "data"],
        "properties": {"event": {"type": "string", "const": name}, "data": data},
    }


# The events of GET .../storyboards/events, by name, as service/events.py writes them.
STREAM_EVENTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "status": (
        "StatusEvent",
        ref("Status"),
        "the status answer: at once, then within 1 s of every change",
    ),
    "done": (
        "DoneEvent",
        ref("Status"),
        "the final status, with `id: done`; the stream ends, and an EventSource's reconnect"
        " (Last-Event-ID: done) answers 204 while the project is still done, which stops it",
    ),
    "timeout": (
        "TimeoutEvent",
        _object(
            {"message": _TEXT, "after_s": {"type": "number"}},
            example={"message": "stopped waiting after 300 s", "after_s": 300},
        ),
        "after STREAM_MAX_S without being done; the stream ends, the work goes on",
    ),
    "unavailable": (
        "UnavailableEvent",
        _object({"message": _TEXT}, example={"message": "the database is unavailable; waiting"}),
        "the database stopped answering; the stream waits for it and goes on",
    ),
    "failure": (
        "StreamFailureEvent",
        _object(
            {"code": _TEXT, "message": _TEXT},
            example={"code": "database_unavailable", "message": "the stream ends"},
        ),
        "the stream failed or the database stayed away; the stream ends (named `failure`, not"
        " `error`, which is EventSource's own event)",
    ),
    "shutdown": (
        "ShutdownEvent",
        _object({"message": _TEXT}, example={"message": "the API is stopping; reconnect"}),
        "the API process stops (SIGTERM); the stream ends, the work goes on",
    ),
}


def components() -> dict[str, Any]:
    """The response schemas, by name."""
    found: dict[str, Any] = {
        # Enums are components of their own: generators name an inline enum after its
        # property and parent, and two such names can collide (and drop both schemas).
        "AspectRatio": {"type": "string", "enum": ["16:9", "9:16", "1:1"]},
        "ProjectState": {"type": "string", "enum": PROJECT_STATES},
        "StoryboardState": {"type": "string", "enum": STORYBOARD_STATES},
        "JobState": {"type": "string", "enum": JOB_STATES},
        "WaitReason": {"type": "string", "enum": list(schemas.WAIT_REASONS)},
        "Error": _object(
            {"error": ref("ErrorBody")},
            example=_ERROR_EXAMPLE,
            description="Every 4xx (and 503) answer of the API",
        ),
        "ErrorBody": _object(
            {
                "code": {
                    **_TEXT,
                    "description": "stable and machine-readable: not_found, validation_error, "
                    "unauthorized, forbidden, conflict, too_many_pending, ...",
                },
                "message": {**_TEXT, "description": "for a person"},
                "details": {"type": "array", "items": ref("ErrorDetail")},
            },
            example=_ERROR_EXAMPLE["error"],
        ),
        "ErrorDetail": {
            "type": "object",
            "description": "One detail of an error: for a validation error, one invalid field "
            "(`loc`, `message`, `type`); other errors carry their own fields",
            "properties": {
                "loc": {
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "description": "where in the body: field names and list indexes",
                },
                "message": _TEXT,
                "type": _TEXT,
            },
            "additionalProperties": True,
            "examples": [
                {"loc": ["shots", 0, "duration_seconds"], "message": "...", "type": "less_than"}
            ],
        },
        "Health": _object({"status": {"type": "string", "enum": ["ok", "ready"]}}),
        "Character": _object(
            {
                "name": _TEXT,
                "description": _TEXT,
                "reference_image_url": _NULLABLE_TEXT,
            }
        ),
        "Shot": _object(
            {
                "shot_number": {"type": "integer", "minimum": 1, "maximum": 1000},
                "description": _TEXT,
                "duration_seconds": {"type": "number"},
                "characters": {"type": "array", "items": _TEXT},
            }
        ),
        "Storyboard": _object(_STORYBOARD_FIELDS, example=_STORYBOARD_EXAMPLE),
        "ProjectSummary": _object(
            {**_SUMMARY_FIELDS, "shot_count": {"type": "integer", "minimum": 0}},
            example={**_SUMMARY_EXAMPLE, "shot_count": 1},
        ),
        "ProjectList": _object(
            {"projects": {"type": "array", "items": ref("ProjectSummary")}},
            example={"projects": [{**_SUMMARY_EXAMPLE, "shot_count": 1}]},
        ),
        "Project": _object(
            {
                **_SUMMARY_FIELDS,
                "characters": {"type": "array", "items": ref("Character")},
                "shots": {"type": "array", "items": ref("Shot")},
                "storyboards": {"type": "array", "items": ref("Storyboard")},
            },
            example={
                **_SUMMARY_EXAMPLE,
                "characters": [
                    {"name": "Ann", "description": "a detective", "reference_image_url": None}
                ],
                "shots": [
                    {
                        "shot_number": 1,
                        "description": "rain on the window",
                        "duration_seconds": 2.5,
                        "characters": ["Ann"],
                    }
                ],
                "storyboards": [{**_STORYBOARD_EXAMPLE, "status": "pending", "job_id": None}],
            },
        ),
        "Generated": _object(
            {
                "project_id": {"type": "string", "format": "uuid"},
                "job_ids": {"type": "array", "items": _INT},
                "total": {"type": "integer", "minimum": 0},
                "queued": {"type": "integer", "minimum": 0},
            },
            example={"project_id": PROJECT_ID, "job_ids": [42], "total": 1, "queued": 1},
        ),
        "Regenerated": _object(
            {
                "project_id": {"type": "string", "format": "uuid"},
                "job_ids": {"type": "array", "items": _INT},
                "job_id": {**_INT, "description": "the shot's new job"},
                "total": {"type": "integer", "minimum": 0},
                "queued": {"type": "integer", "minimum": 0},
            },
            example={
                "project_id": PROJECT_ID,
                "job_ids": [43],
                "job_id": 43,
                "total": 1,
                "queued": 1,
            },
        ),
        "StoryboardStatus": _object(
            {
                **_STORYBOARD_FIELDS,
                "wait_reason": {
                    "anyOf": [ref("WaitReason"), {"type": "null"}],
                    "description": "why a generating shot waits; null while its call is in "
                    "flight and once it is finished",
                },
                "next_attempt_at": {
                    **_NULLABLE_WHEN,
                    "description": "when the shot's next attempt may start; null when only "
                    "its turn or a free slot decides",
                },
            }
        ),
        "Status": _object(
            {
                "project_id": {"type": "string", "format": "uuid"},
                "status": ref("ProjectState"),
                **_counts("total", "pending", "generating", "succeeded", "failed"),
                "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                "done": {"type": "boolean"},
                "storyboards": {"type": "array", "items": ref("StoryboardStatus")},
                "eta_s": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "description": "estimated seconds until done: the slowest generating "
                    "shot's place in the queue's line over the queue's throughput of the last "
                    "minutes, slowed to the project's share of the running slots; null when "
                    "unknown",
                },
                "spent": {
                    "type": "number",
                    "minimum": 0,
                    "description": "credits the upstream calls of the project's storyboards cost",
                },
            },
            example=_STATUS_EXAMPLE,
        ),
        "Job": _object(
            {
                "id": _INT,
                "queue": _TEXT,
                "kind": _TEXT,
                "state": ref("JobState"),
                "payload": {**_JSON_OBJECT, "description": "the job's arguments (its kind's)"},
                "priority": _INT,
                "attempts": {"type": "integer", "minimum": 0},
                "max_attempts": {"type": "integer", "minimum": 1},
                "last_error": {
                    **_NULLABLE_TEXT,
                    "description": "admins: the traceback; owners: its last line",
                },
                "progress": {"type": ["object", "null"], "additionalProperties": True},
                "result": {"description": "what the handler returned (any JSON), or null"},
                "run_at": _WHEN,
                "created_at": _WHEN,
                "started_at": _NULLABLE_WHEN,
                "finished_at": _NULLABLE_WHEN,
            },
            example=_JOB_EXAMPLE,
        ),
        "JobPage": _object(
            {
                "jobs": {"type": "array", "items": ref("Job")},
                "next": {
                    "type": ["integer", "null"],
                    "description": "`before` for the next page; null on the last",
                },
            },
            example={"jobs": [_JOB_EXAMPLE], "next": None},
        ),
        "QueueCounts": _object(_counts(*QUEUE_COUNTS)),
        "QueueStats": _object(
            {"queues": {"type": "object", "additionalProperties": ref("QueueCounts")}},
            example={"queues": {"default": dict.fromkeys(QUEUE_COUNTS, 0)}},
        ),
        "Queue": _object(
            {
                "name": _TEXT,
                "paused": {"type": "boolean"},
                **_counts(*QUEUE_COUNTS),
                "oldest_waiting_s": {
                    "type": ["number", "null"],
                    "description": "how long its oldest runnable job has waited; null: none",
                },
                "finished_last_5m": {"type": "integer", "minimum": 0},
            },
            example=_QUEUE_EXAMPLE,
        ),
        "QueueList": _object(
            {"queues": {"type": "array", "items": ref("Queue")}},
            example={"queues": [_QUEUE_EXAMPLE]},
        ),
        "Drained": _object(
            {
                **_counts("ran", "succeeded", "failed", "retried", "released", "lost"),
                "elapsed_s": {"type": "number", "minimum": 0},
            },
            example={
                "ran": 3,
                "succeeded": 2,
                "failed": 0,
                "retried": 1,
                "released": 0,
                "lost": 0,
                "elapsed_s": 4.2,
            },
        ),
        "StreamEvent": {
            "description": "One event of the live-progress stream (`event:` line, `data:` "
            "line of JSON)",
            "oneOf": [ref(name) for name, _, _ in STREAM_EVENTS.values()],
            "discriminator": {
                "propertyName": "event",
                "mapping": {
                    event: ref(name)["$ref"] for event, (name, _, _) in STREAM_EVENTS.items()
                },
            },
        },
    }
    for event, (name, data, description) in STREAM_EVENTS.items():
        found[name] = _event(event, data, description)
    return found
