"""The jobs filter of the dashboard's listing and bulk actions, read from a query string or a
form: queue, state, kind and payload (a JSON object the payload must contain). A bad value is
refused with the reason, before anything reaches the database (a 400, never a 500)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pgqueue import models, params, reports

FIELDS = ("queue", "state", "kind", "payload")


class BadFilter(ValueError):
    """A filter's value is malformed; the message says which and what is expected."""


def read(values: Mapping[str, str]) -> reports.JobFilter:
    """The filter of `values` (missing or blank fields: any)."""
    found: dict[str, Any] = {}
    for name in ("queue", "kind"):
        value = values.get(name, "").strip()
        if value:
            if not params.is_name(value):
                raise BadFilter(f"{name} must be 1-128 characters, with no NUL byte")
            found[name] = value
    state = values.get("state", "").strip()
    if state:
        try:
            found["state"] = models.JobState(state)
        except ValueError:
            names = ", ".join(s.value for s in models.JobState)
            raise BadFilter(f"state must be one of {names}; got {state[:40]!r}") from None
    payload = values.get("payload", "").strip()
    if payload:
        found["payload"] = _json_object(payload)
    return reports.JobFilter(**found)


def as_fields(found: reports.JobFilter) -> dict[str, str]:
    """The query-string (or hidden form) fields that read back as `found`."""
    fields = {
        "queue": found.queue or "",
        "state": "" if found.state is None else found.state.value,
        "kind": found.kind or "",
        "payload": "" if found.payload is None else json.dumps(found.payload, sort_keys=True),
    }
    return {k: v for k, v in fields.items() if v}


def describe(found: reports.JobFilter) -> str:
    """The filter in words, for a confirmation ("every job" when it has none)."""
    parts = [f"{name} {value}" for name, value in as_fields(found).items() if name != "payload"]
    if found.payload is not None:
        parts.append(f"payload containing {json.dumps(found.payload, sort_keys=True)}")
    return ", ".join(parts) if parts else "no filter: every job"


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object Postgres's jsonb accepts as it is: no NaN or infinity, no NUL character
    and no lone surrogate (jsonb refuses all three, which would be a 500 from the database)."""
    if len(text) > reports.MAX_PAYLOAD_FILTER_CHARS:
        raise BadFilter(f"payload must be at most {reports.MAX_PAYLOAD_FILTER_CHARS} characters")
    example = 'e.g. {"project_id": "p1"}'
    try:
        value = json.loads(text)
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
        encoded.encode("utf-8")  # a lone surrogate ('\ud800') cannot be encoded
    except (ValueError, RecursionError, UnicodeEncodeError):
        raise BadFilter(f"payload must be a JSON object, {example}") from None
    if not isinstance(value, dict):
        raise BadFilter(f"payload must be a JSON object (fields and values), {example}")
    if _holds_nul(value):
        raise BadFilter("payload must not contain a NUL character (\\u0000)")
    return value


def _holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any key or string of `value` (jsonb cannot hold one).
    Walked with a stack, not recursion: a filter may nest as deep as its length allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
