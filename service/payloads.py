"""`StoryboardPayload`: what a storyboard job carries, as a typed value instead of a dict.

The enqueue (`storyboards.generate`) builds it, the handler (`jobs`) and the job endpoint's
ownership check (`routes.get_job`) read it back with `from_job`, which is the one place that
knows the JSON shape and refuses anything else with a message that says what is wrong.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, TypeVar

from pgqueue import Job

JOB_KIND = "storyboard.generate"
MAX_SHOT_NUMBER = 1000  # as the shots table's CHECK

T = TypeVar("T")


class MalformedPayload(ValueError):
    """A job's payload is not a storyboard payload."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoryboardPayload:
    """The payload of one `storyboard.generate` job.

    Args:
        project_id: the project the shot belongs to.
        shot_number: the shot whose storyboard the job generates.
        generation: the project's generate call that enqueued the job (part of its
            idempotency key).
    """

    project_id: uuid.UUID
    shot_number: int
    generation: int

    def as_json(self) -> dict[str, Any]:
        """The payload as the job stores it."""
        return {
            "project_id": str(self.project_id),
            "shot_number": self.shot_number,
            "generation": self.generation,
        }

    @classmethod
    def from_job(cls, job: Job) -> StoryboardPayload:
        """Read the payload of `job` back.

        Raises:
            MalformedPayload: the job is of another kind, or its payload lacks a field or
                holds one of the wrong type; the message names the job and the field.
        """
        if job.kind != JOB_KIND:
            raise MalformedPayload(f"job {job.id} is a {job.kind!r} job, not {JOB_KIND!r}")
        payload = job.payload
        if not isinstance(payload, dict):
            raise MalformedPayload(
                f"job {job.id} has a malformed payload: expected a JSON object with "
                f"project_id, shot_number and generation, got {type(payload).__name__}"
            )
        text = _field(job, "project_id", str)
        try:
            project_id = uuid.UUID(text)
        except ValueError:
            raise MalformedPayload(
                f"job {job.id} has a malformed payload: project_id {text!r} is not a UUID"
            ) from None
        shot_number = _field(job, "shot_number", int)
        generation = _field(job, "generation", int)
        if not 1 <= shot_number <= MAX_SHOT_NUMBER or generation < 0:
            raise MalformedPayload(
                f"job {job.id} has a malformed payload: shot_number {shot_number} or "
                f"generation {generation} out of range"
            )
        return cls(project_id=project_id, shot_number=shot_number, generation=generation)


def _field(job: Job, name: str, kind: type[T]) -> T:
    value = job.payload.get(name)
    # bool is an int to Python, but `true` is no shot number.
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = "a string" if kind is str else "an integer"
        raise MalformedPayload(
            f"job {job.id} has a malformed payload: {name} must be {expected}, got {value!r}"
        )
    return value
