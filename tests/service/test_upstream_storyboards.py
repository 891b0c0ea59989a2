"""What a shot reads when the upstream's answers are refused (issue 8, points 1, 3 and 4), run
by an in-process worker against the fake upstream: the storyboard fails with the reason, and
nothing is stored under `MEDIA_DIR`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from pgqueue import Queue, Worker
from service.settings import ServiceSettings
from tests.service.support import http_settings, project_body, wait_done
from tests.support.upstream import Answer, Call, FakeUpstream, error

HTML = b"<html><body>Service Unavailable</body></html>"


async def _generate_one(client: httpx.AsyncClient, alice: dict[str, str]) -> tuple[str, int]:
    body = project_body(1, aspect_ratio="1:1")
    project = (await client.post("/api/projects", json=body, headers=alice)).json()
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    return project["id"], answer["job_ids"][0]


async def test_an_html_answer_fails_the_shot_after_the_last_attempt(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
    queue: Queue,
    media_dir: Path,
) -> None:
    upstream.script = lambda call: Answer(data=HTML)
    project_id, job_id = await _generate_one(client, alice)
    run_worker(http_settings(settings, upstream))
    status = await wait_done(client, project_id, alice)
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed" and storyboard["image_url"] is None
    assert "upstream answer is not an image (starts with b'<html>" in storyboard["error"]
    assert len(upstream.calls_for(project_id)) == settings.max_attempts  # retryable each time
    job = await queue.get(job_id)
    assert job is not None and job.state == "failed" and job.attempts == settings.max_attempts
    assert not list(media_dir.rglob("*.*"))


async def test_a_metadata_url_fails_the_shot_at_once_and_is_never_fetched(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # Through the fake's own redirect: the first hop is allowed (the API host), the next is not.
    target = upstream.redirect_url("http://169.254.169.254/latest/meta-data/iam/")
    upstream.script = lambda call: Answer(image="url", url=target)
    project_id, _ = await _generate_one(client, alice)
    run_worker(http_settings(settings, upstream))
    status = await wait_done(client, project_id, alice)
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed" and storyboard["attempts"] == 1
    assert "169.254.169.254 is a link-local address" in storyboard["error"]


async def test_a_retry_after_past_the_storyboard_timeout_fails_the_shot_at_once(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    def busy(call: Call) -> Answer:
        return error(429, "rate limited", retry_after="900")

    upstream.script = busy
    project_id, _ = await _generate_one(client, alice)
    run_worker(http_settings(settings, upstream, storyboard_timeout_s=300))
    status = await wait_done(client, project_id, alice)
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed" and storyboard["attempts"] == 1
    assert "the upstream asked to retry after 900 s" in storyboard["error"]
    assert len(upstream.calls_for(project_id)) == 1


async def test_a_retry_after_that_with_the_attempt_passes_the_timeout_fails_the_shot(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # Each wait alone fits the storyboard's limit, the attempt's 2 s plus the 9 s asked do
    # not: retrying would leave the shot `generating` past STORYBOARD_TIMEOUT_S (10 s).
    upstream.script = lambda call: error(503, "overloaded", retry_after="9", latency_s=2.0)
    project_id, _ = await _generate_one(client, alice)
    worker_settings = http_settings(
        settings, upstream, image_timeout_s=2.5, storyboard_timeout_s=10
    )
    run_worker(worker_settings)
    status = await wait_done(client, project_id, alice)
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed" and storyboard["attempts"] == 1
    assert "the upstream asked to retry after 9 s" in storyboard["error"]
    assert "STORYBOARD_TIMEOUT_S=10 s" in storyboard["error"]
