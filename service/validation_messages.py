"""Validation errors in plain words, for the people who read them in the studio's form.

pydantic's messages are written for programmers ("Value should have at least 1 item after
validation, not 0" for an empty title). `plain_details` keeps each error's `loc` and `type`
(the contract's detail shape, what clients map to fields) and rewrites its `message` to say
what to do ("must not be empty", "add at least 1 shot"), short enough to stand beside the
field it names. `summary` joins them into the error's one-line `message` with their places.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# What one item of a list field is called, to say "add at least 1 shot".
ITEM_NAMES = {
    "shots": "shot",
    "characters": "character",
    "shot_numbers": "shot number",
}
# A field's name for people, where its key is not plain English already.
FIELD_NAMES = {
    "shot_number": "shot number",
    "duration_seconds": "duration",
    "reference_image_url": "reference image URL",
    "aspect_ratio": "aspect ratio",
    "shot_numbers": "shot numbers",
}
# The prefix pydantic puts before the message of a check of ours (a ValueError).
VALUE_ERROR_PREFIX = "Value error, "


def _number(value: Any) -> str:
    """60.0 as 60, 0.5 as 0.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _length(error: ErrorDetails, bound: str, verb: str) -> str:
    ctx = error.get("ctx") or {}
    limit = int(ctx.get(bound, 0))
    if isinstance(error.get("input"), list):
        field = next((p for p in reversed(error["loc"]) if isinstance(p, str)), "")
        item = ITEM_NAMES.get(field, "item")
        plural = item if limit == 1 else f"{item}s"
        return f"add at least {limit} {plural}" if verb == "least" else f"at most {limit} {plural}"
    if verb == "least":
        return "must not be empty" if limit <= 1 else f"must be at least {limit} characters"
    return f"must be at most {limit} characters (this is {ctx.get('actual_length', 'more')})"


# The unit of a number field, said after its bound ("must be at most 60 seconds").
UNITS = {"duration_seconds": " seconds"}


def _bound(words: str, key: str) -> Callable[[ErrorDetails], str]:
    def message(error: ErrorDetails) -> str:
        unit = UNITS.get(str(error["loc"][-1]) if error["loc"] else "", "")
        return f"must be {words} {_number((error.get('ctx') or {}).get(key))}{unit}"

    return message


def _literal(error: ErrorDetails) -> str:
    expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
    return f"must be one of {expected.replace(' or ', ', ')}"


def _ours(error: ErrorDetails) -> str:
    return str(error["msg"]).removeprefix(VALUE_ERROR_PREFIX)


# By pydantic's error type; a type not here keeps pydantic's message.
MESSAGES: dict[str, Callable[[ErrorDetails], str]] = {
    "missing": lambda error: "is required",
    "extra_forbidden": lambda error: "is not a field this accepts (check its spelling)",
    "string_type": lambda error: "must be text",
    "int_type": lambda error: "must be a whole number",
    "int_from_float": lambda error: "must be a whole number",
    "float_type": lambda error: "must be a number",
    "finite_number": lambda error: "must be a number",
    "bool_type": lambda error: "must be true or false",
    "list_type": lambda error: "must be a list",
    "model_type": lambda error: "must be an object with named fields",
    "dict_type": lambda error: "must be an object with named fields",
    "literal_error": _literal,
    "string_too_short": lambda error: _length(error, "min_length", "least"),
    "string_too_long": lambda error: _length(error, "max_length", "most"),
    "too_short": lambda error: _length(error, "min_length", "least"),
    "too_long": lambda error: _length(error, "max_length", "most"),
    "greater_than": _bound("more than", "gt"),
    "greater_than_equal": _bound("at least", "ge"),
    "less_than": _bound("less than", "lt"),
    "less_than_equal": _bound("at most", "le"),
    "value_error": _ours,
    "assertion_error": _ours,
}


def plain_details(exc: ValidationError) -> list[dict[str, Any]]:
    """The contract's details of `exc` (`loc`, `message`, `type`), in plain words.

    A check of ours that names its places (`ctx["problems"]`: `(loc, message)` pairs, as
    `schemas.ProjectIn`'s cross-field check raises) becomes one detail per place, so each
    lands beside its field.
    """
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        problems = (error.get("ctx") or {}).get("problems")
        if problems:
            for loc, message in problems:
                details.append({"loc": list(loc), "message": message, "type": error["type"]})
            continue
        plain = MESSAGES.get(error["type"])
        message = plain(error) if plain else str(error["msg"])
        details.append({"loc": list(error["loc"]), "message": message, "type": error["type"]})
    return details


def place(loc: Sequence[str | int]) -> str:
    """Where `loc` points, for people: ("shots", 0, "duration_seconds") is "shot row 1,
    duration" (rows count from 1, as the form shows them); the body itself is ""."""
    words: list[str] = []
    parts = list(loc)
    index = 0
    while index < len(parts):
        part = parts[index]
        following = parts[index + 1] if index + 1 < len(parts) else None
        if isinstance(part, str) and isinstance(following, int):
            row = " row" if index == 0 else ""
            words.append(f"{ITEM_NAMES.get(part, part)}{row} {following + 1}")
            index += 2
            continue
        words.append(FIELD_NAMES.get(str(part), str(part)))
        index += 1
    return ", ".join(words)


def summary(details: Sequence[dict[str, Any]]) -> str:
    """One line for the error's `message`: each problem with its place."""
    parts = []
    for detail in details:
        where = place(detail["loc"])
        parts.append(f"{where}: {detail['message']}" if where else detail["message"])
    count = len(details)
    return f"{count} problem{'' if count == 1 else 's'} to fix: " + "; ".join(parts)
