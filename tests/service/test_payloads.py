"""`StoryboardPayload` and the storyboard error rule, on their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pgqueue import Job, JobState
from service.failures import failure_error
from service.payloads import JOB_KIND, MalformedPayload, StoryboardPayload

PROJECT = uuid.UUID("6f1c1a52-0d7e-4a39-9a0e-3f4f5c2b1d10")


def _job(payload: Any, kind: str = JOB_KIND) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=7, queue="default", kind=kind, payload=payload, state=JobState.QUEUED, priority=0,
        attempts=0, max_attempts=3, run_at=now, lease_expires_at=None, lease_token=None,
        worker_id=None, last_error=None, progress=None, result=None, idempotency_key=None,
        concurrency_key=None, concurrency_limit=None, timeout_s=None, cancel_requested_at=None,
        created_at=now, started_at=None, finished_at=None,
    )  # fmt: skip


def test_round_trip() -> None:
    payload = StoryboardPayload(PROJECT, 4, 2)
    assert payload.as_json() == {"project_id": str(PROJECT), "shot_number": 4, "generation": 2}
    assert StoryboardPayload.from_job(_job(payload.as_json())) == payload
    with pytest.raises(AttributeError):
        payload.shot_number = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "expected a JSON object"),
        (["a"], "expected a JSON object"),
        ({"shot_number": 1, "generation": 1}, "project_id must be a string, got None"),
        ({"project_id": 5, "shot_number": 1, "generation": 1}, "project_id must be a string"),
        ({"project_id": "x", "shot_number": 1, "generation": 1}, "'x' is not a UUID"),
        ({"project_id": str(PROJECT), "generation": 1}, "shot_number must be an integer"),
        ({"project_id": str(PROJECT), "shot_number": "1", "generation": 1}, "an integer"),
        ({"project_id": str(PROJECT), "shot_number": True, "generation": 1}, "got True"),
        ({"project_id": str(PROJECT), "shot_number": 1}, "generation must be an integer"),
        ({"project_id": str(PROJECT), "shot_number": 0, "generation": 1}, "out of range"),
        ({"project_id": str(PROJECT), "shot_number": 1, "generation": -1}, "out of range"),
    ],
)
def test_malformed_payloads_say_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(MalformedPayload, match="job 7 ") as caught:
        StoryboardPayload.from_job(_job(payload))
    assert message in str(caught.value)


def test_a_job_of_another_kind_is_not_a_storyboard_job() -> None:
    with pytest.raises(MalformedPayload, match=r"'email\.send' job, not 'storyboard\.generate'"):
        StoryboardPayload.from_job(_job({"project_id": str(PROJECT)}, kind="email.send"))


TRACEBACK = """Traceback (most recent call last):
  File "/app/service/jobs.py", line 120, in generate_storyboard
    image = await state.provider.generate(request)
service.images.errors.RetryableImageError: upstream answered 503: overloaded
"""


@pytest.mark.parametrize(
    ("state", "last_error", "expected"),
    [
        (JobState.FAILED, TRACEBACK, "upstream answered 503: overloaded"),
        (JobState.FAILED, "DoNotRetry: upstream refused: policy", "upstream refused: policy"),
        (JobState.FAILED, "RetryLater: rate limited", "rate limited"),
        (JobState.FAILED, "Traceback ...\nKeyError: 'x'\n", "KeyError: 'x'"),
        (JobState.FAILED, "Traceback ...\npkg.mod.Boom: it broke\n\n", "Boom: it broke"),
        (JobState.FAILED, "lease expired: worker w1 left", "lease expired: worker w1 left"),
        (JobState.CANCELLED, "cancelled before it ran", "cancelled before it ran"),
        (JobState.FAILED, None, "job failed with no error recorded"),
        ("cancelled", "  \n", "job cancelled with no error recorded"),
        ("succeeded", None, "job finished without storing an image"),
        (None, None, "timed out: still generating after 300 s with no live job"),
        ("running", "whatever", "timed out: still generating after 300 s with no live job"),
    ],
)  # fmt: skip
def test_the_storyboard_error_is_the_readable_last_line(
    state: JobState | str | None, last_error: str | None, expected: str
) -> None:
    assert failure_error(state, last_error, 300.0) == expected


def test_the_storyboard_error_is_bounded() -> None:
    assert len(failure_error(JobState.FAILED, "x" * 5000)) == 1000
