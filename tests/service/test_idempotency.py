"""One generation is paid once: every call of it carries one `Idempotency-Key`, and its answer is
a checkpoint of the job that later attempts read instead of calling (CONTRACT.md, the http
provider). The fake upstream charges per key as a provider honouring the header does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pgqueue import Queue, RetryPolicy, Worker, WorkerConfig
from service.images import HttpImageProvider, ImageRequest, RetryableImageError
from service.jobs import create_registry
from service.settings import ServiceSettings
from tests.service import support
from tests.support.settings import WORKER_OPTIONS
from tests.support.upstream import API_KEY, Answer, Call, FakeUpstream, error, png_bytes
from tests.support.wait import wait_for

IMAGE = png_bytes(1280, 720)  # what the fake answers for a 16:9 shot


@contextlib.asynccontextmanager
async def _worker(
    db_url: str, settings: ServiceSettings, retry_delay_s: float = 0.05
) -> AsyncIterator[Worker]:
    options = {
        **WORKER_OPTIONS,
        "retry_policy": RetryPolicy(base_s=retry_delay_s, cap_s=retry_delay_s * 4, jitter=0),
    }
    worker = Worker(db_url, create_registry(settings), WorkerConfig(**options))
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(immediate=True)
        await asyncio.wait_for(task, timeout=10)


def _key(project_id: str, shot_number: int, job_id: int) -> str:
    return f"storyboard-{project_id}-{shot_number}-{job_id}"


async def test_every_call_of_a_generation_sends_its_key_and_a_regenerate_a_new_one(
    settings: ServiceSettings,
    alice: dict[str, str],
    upstream: FakeUpstream,
    db_url: str,
) -> None:
    def refuse_each_first_call(call: Call) -> Answer | None:
        first = not any(c.idempotency_key == call.idempotency_key for c in upstream.calls[:-1])
        return error(503, "overloaded") if first else None

    upstream.script = refuse_each_first_call
    async with (
        support.api_client(settings) as client,
        _worker(db_url, support.http_settings(settings, upstream)),
    ):
        project = (
            await client.post("/api/projects", json=support.project_body(1), headers=alice)
        ).json()
        project_id = project["id"]
        generated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=alice
        )
        (first_job,) = generated.json()["job_ids"]
        await support.wait_done(client, project_id, alice)
        regenerated = await client.post(
            f"/api/projects/{project_id}/storyboards/1/regenerate", headers=alice
        )
        second_job = regenerated.json()["job_id"]
        status = await support.wait_done(client, project_id, alice)

    assert status["storyboards"][0]["status"] == "success"
    first, second = _key(project_id, 1, first_job), _key(project_id, 1, second_job)
    calls = upstream.calls_for(project_id, 1)
    # Two attempts per generation (a 503, then the image), each generation under its own key.
    assert [(c.idempotency_key, c.status) for c in calls] == [
        (first, 503),
        (first, 200),
        (second, 503),
        (second, 200),
    ]
    assert all(c.headers["idempotency-key"] == c.request_id for c in calls)
    assert upstream.charges_for(project_id) == {first: 1, second: 1}


async def test_a_media_store_failing_after_the_answer_costs_no_second_call(
    settings: ServiceSettings,
    alice: dict[str, str],
    upstream: FakeUpstream,
    db_url: str,
    media_dir: Path,
    queue: Queue,
) -> None:
    # MEDIA_DIR is a file for the first attempt: writing the image fails after the answer came.
    media_dir.parent.mkdir(parents=True, exist_ok=True)
    media_dir.write_text("not a directory")
    api_settings = settings.model_copy(update={"max_attempts": 5})
    async with (
        support.api_client(api_settings) as client,
        _worker(db_url, support.http_settings(settings, upstream), retry_delay_s=0.5),
    ):
        project = (
            await client.post("/api/projects", json=support.project_body(1), headers=alice)
        ).json()
        project_id = project["id"]
        generated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=alice
        )
        (job_id,) = generated.json()["job_ids"]

        async def failed_once() -> bool:
            job = await queue.get(job_id)
            return job is not None and job.attempts >= 1 and job.last_error is not None

        await wait_for(failed_once, timeout=10, message="the first attempt's failure")
        media_dir.unlink()  # writable from now on
        status = await support.wait_done(client, project_id, alice)

    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "success" and storyboard["attempts"] >= 2, storyboard
    job = await queue.get(job_id)
    # Succeeded: no current error; the failed write is in the attempt history.
    assert job is not None and job.last_error is None, job
    attempts = await queue.attempts(job_id)
    assert any("media" in (a.error or "") for a in attempts[:-1]), attempts
    assert attempts[-1].outcome == "succeeded"
    # One call in all: the later attempts read the checkpoint, and nobody paid twice.
    assert len(upstream.calls_for(project_id)) == 1
    assert upstream.charges_for(project_id) == {_key(project_id, 1, job_id): 1}
    (stored,) = media_dir.rglob("*.png")
    assert stored.read_bytes() == IMAGE


async def test_the_provider_sends_its_request_id_as_the_key_and_the_fake_charges_it_once(
    upstream: FakeUpstream,
) -> None:
    request = ImageRequest(
        shot_number=1,
        description="rain",
        style="",
        aspect_ratio="16:9",
        request_id="storyboard-p-1-7",
    )
    unkeyed = dataclasses.replace(request, request_id="")
    upstream.hold()
    async with httpx.AsyncClient() as http:
        provider = HttpImageProvider(
            http, base_url=upstream.base_url, api_key=API_KEY, model="m", timeout_s=5
        )
        held = asyncio.create_task(provider.generate(request))
        await wait_for(lambda: len(upstream.calls) == 1, message="the first call in flight")
        # A second call while the first generates: in progress, retryable, not charged.
        with pytest.raises(RetryableImageError, match="409"):
            await provider.generate(request)
        upstream.release()
        assert (await held).data == IMAGE
        assert (await provider.generate(request)).data == IMAGE  # the answer again, free
        await provider.generate(unkeyed)  # no request id: no key, a charge of its own
    assert [c.headers.get("idempotency-key") for c in upstream.calls] == [
        "storyboard-p-1-7",
        "storyboard-p-1-7",
        "storyboard-p-1-7",
        None,
    ]
    assert [(c.status, c.charged, c.replayed) for c in upstream.calls] == [
        (200, True, False),
        (409, False, False),
        (200, False, True),
        (200, True, False),
    ]
    assert dict(upstream.charges) == {"storyboard-p-1-7": 1, "": 1}
