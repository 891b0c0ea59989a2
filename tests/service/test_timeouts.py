"""Nothing stays `generating`: a storyboard's job has a time limit that fits the storyboard's.

The rule (docs/service.md, "What we promise"): a storyboard is `generating` for at most
`STORYBOARD_TIMEOUT_S` after its last attempt started, then it reads `failed` with a message
that says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg
import pytest

from pgqueue import Queue, Worker
from service.settings import ServiceSettings
from tests.service import support
from tests.support.upstream import FakeUpstream, hang


def test_the_job_timeout_is_a_call_a_download_and_a_margin() -> None:
    settings = ServiceSettings(image_timeout_s=55)
    assert settings.storyboard_job_timeout_s == 2 * 55 + 5
    settings.check()  # 115 s fits the default 300 s


@pytest.mark.parametrize(("image_timeout_s", "storyboard_timeout_s"), [(200, 300), (55, 100)])
def test_settings_whose_job_outlives_the_storyboard_are_refused(
    image_timeout_s: float, storyboard_timeout_s: float
) -> None:
    settings = ServiceSettings(
        image_timeout_s=image_timeout_s, storyboard_timeout_s=storyboard_timeout_s
    )
    with pytest.raises(ValueError, match="STORYBOARD_TIMEOUT_S") as caught:
        settings.check()
    assert "IMAGE_TIMEOUT_S" in str(caught.value)


async def test_a_handler_hung_with_live_heartbeats_fails_within_the_storyboard_timeout(
    settings: ServiceSettings,
    alice: dict[str, str],
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
    queue: Queue,
) -> None:
    # The API's settings set the job's limit: 2 x 0.25 + 5 = 5.5 s, within 6 s.
    api_settings = settings.model_copy(
        update={"image_timeout_s": 0.25, "storyboard_timeout_s": 6.0, "max_attempts": 1}
    )
    api_settings.check()
    # The worker's upstream never answers and its own call limit is far away: the handler
    # hangs, its heartbeats alive, until the job's time limit ends it.
    upstream.script = lambda call: hang(60)
    worker_settings = support.http_settings(settings, upstream, image_timeout_s=60.0)
    async with support.api_client(api_settings) as client:
        body = support.project_body(1, aspect_ratio="1:1")
        project = (await client.post("/api/projects", json=body, headers=alice)).json()
        answer = (
            await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
        ).json()
        job = await queue.get(answer["job_ids"][0])
        assert job is not None and job.timeout_s == pytest.approx(5.5)
        started = time.monotonic()
        run_worker(worker_settings)
        status = await support.wait_done(client, project["id"], alice, timeout=12)
        elapsed = time.monotonic() - started
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed", storyboard
    assert "timed out after 5.5" in storyboard["error"], storyboard
    assert elapsed <= api_settings.storyboard_timeout_s + 1, elapsed
    assert status["done"] and status["status"] == "failed"


async def test_an_attempt_running_past_the_storyboard_timeout_reads_failed(
    settings: ServiceSettings,
    alice: dict[str, str],
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
    pool: asyncpg.Pool,
) -> None:
    # The read side keeps the rule on its own: a job enqueued without a time limit (by an API
    # of before it, or by hand) whose attempt hangs, heartbeats alive.
    api_settings = settings.model_copy(
        update={"image_timeout_s": 0.25, "storyboard_timeout_s": 6.0}
    )
    upstream.script = lambda call: hang(60)
    worker_settings = support.http_settings(settings, upstream, image_timeout_s=60.0)
    async with support.api_client(api_settings) as client:
        body = support.project_body(1, aspect_ratio="1:1")
        project = (await client.post("/api/projects", json=body, headers=alice)).json()
        answer = (
            await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
        ).json()
        await pool.execute("UPDATE pgqueue.jobs SET timeout_s = NULL")
        started = time.monotonic()
        run_worker(worker_settings)
        status = await support.wait_done(client, project["id"], alice, timeout=12)
        elapsed = time.monotonic() - started
        job_state = await pool.fetchval(
            "SELECT state FROM pgqueue.jobs WHERE id = $1", answer["job_ids"][0]
        )
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed", storyboard
    assert "still running after 6 s" in storyboard["error"], storyboard
    assert elapsed <= api_settings.storyboard_timeout_s + 1.5, elapsed
    assert job_state == "running"  # the worker still holds it: only the read side acted
