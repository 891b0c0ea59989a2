"""Request bodies and their validation; `parse_body` turns any bad input into a 4xx `ApiError`.

Models are strict (no "3" for 3, no 1 for true) and forbid unknown fields, so a typo in a
field name is reported instead of silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from service import validation_messages
from service.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB; larger bodies answer 413
MAX_URL_CHARS = 2000

Model = TypeVar("Model", bound=BaseModel)


def _storable(value: str) -> str:
    # Postgres text refuses NUL, and lone surrogates cannot be encoded as UTF-8: both would
    # otherwise surface as a database error (a 5xx) instead of a validation error.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL, e.g. https://example.com/alice.png")
    return value


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(_storable), AfterValidator(_not_blank)
]
HttpUrl = Annotated[
    str, Field(max_length=MAX_URL_CHARS), AfterValidator(_storable), AfterValidator(_http_url)
]
ShotNumber = Annotated[int, Field(ge=1, le=1000)]

# Why a storyboard waits, in the status answer (`wait_reason`): pgqueue's `WaitReason`
# values, named here because the contract fixes them (a test keeps the two equal).
WAIT_REASONS = (
    "queued",
    "concurrency",
    "rate_limit",
    "upstream_down",
    "over_budget",
    "retry_scheduled",
    "queue_paused",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CharacterIn(_Strict):
    """A character of a project."""

    name: Name
    description: Annotated[Text, Field(max_length=2000)] = ""
    reference_image_url: HttpUrl | None = None


class ShotIn(_Strict):
    """A shot of a project."""

    shot_number: ShotNumber
    description: Annotated[Text, Field(min_length=1, max_length=2000), AfterValidator(_not_blank)]
    duration_seconds: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)]
    characters: Annotated[list[Name], Field(max_length=20)] = []


class ProjectIn(_Strict):
    """The body of `POST /api/projects`."""

    title: Annotated[Text, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
    style: Annotated[Text, Field(max_length=200)] = ""
    aspect_ratio: Literal["16:9", "9:16", "1:1"]
    characters: Annotated[list[CharacterIn], Field(max_length=20)] = []
    shots: Annotated[list[ShotIn], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _check_references(self) -> ProjectIn:
        # Every problem at its own place (the studio shows each beside its field), all at once.
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen_names: set[str] = set()
        for index, character in enumerate(self.characters):
            if character.name in seen_names:
                problems.append(
                    (("characters", index, "name"), f"{character.name} is already a character")
                )
            seen_names.add(character.name)
        seen_numbers: set[int] = set()
        for index, shot in enumerate(self.shots):
            if shot.shot_number in seen_numbers:
                problems.append(
                    (
                        ("shots", index, "shot_number"),
                        f"shot number {shot.shot_number} is used twice",
                    )
                )
            seen_numbers.add(shot.shot_number)
            unknown = [name for name in shot.characters if name not in seen_names]
            if unknown:
                problems.append(
                    (
                        ("shots", index, "characters"),
                        f"no character is named {unknown[0]}"
                        if len(unknown) == 1
                        else f"no characters are named {', '.join(unknown)}",
                    )
                )
            if len(set(shot.characters)) != len(shot.characters):
                problems.append((("shots", index, "characters"), "lists a character twice"))
        if problems:
            raise PydanticCustomError(
                "invalid_references",
                "{first}",
                {"first": problems[0][1], "problems": problems},
            )
        return self


class GenerateIn(_Strict):
    """The body of `POST /api/projects/{id}/storyboards/generate` (optional)."""

    shot_numbers: Annotated[list[ShotNumber], Field(min_length=1, max_length=1000)] | None = None
    force: bool = False

    @model_validator(mode="after")
    def _check_unique(self) -> GenerateIn:
        if self.shot_numbers is not None and len(set(self.shot_numbers)) != len(self.shot_numbers):
            raise ValueError(f"shot_numbers must be unique: {_duplicates(self.shot_numbers)}")
        return self


def _duplicates(values: list[Any]) -> str:
    seen: set[Any] = set()
    repeated: list[Any] = []
    for value in values:
        if value in seen:
            repeated.append(value)
        seen.add(value)
    return ", ".join(str(v) for v in dict.fromkeys(repeated))


def parse_body(model: type[Model], body: bytes, *, optional: bool = False) -> Model:
    """Validate a JSON request body against `model`.

    Args:
        model: the expected shape.
        body: the raw body (already limited to `MAX_BODY_BYTES`).
        optional: an empty body means `{}`.

    Raises:
        ApiError: 400 for a body that is not JSON, 422 for JSON of the wrong shape.
    """
    if not body.strip() and optional:
        return model.model_validate({})
    try:
        # Decoded here, strictly: `json.loads(bytes)` would guess UTF-16 or UTF-32 and let
        # UTF-8-encoded surrogates through.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body's JSON is nested too deeply") from None
    except ValueError as exc:  # after JSONDecodeError, its subclass: an integer past 4,300 digits
        raise ApiError(400, "invalid_json", f"the body holds a number too long: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_messages.plain_details(exc)
        raise ApiError(
            422, "validation_error", validation_messages.summary(details), details=details
        ) from None
