"""The storyboard handler, run by an in-process worker: images, outcomes, project status."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
from PIL import Image

from pgqueue import Job, Queue, Worker
from service.settings import ServiceSettings
from tests.service.support import http_settings, project_body, wait_done
from tests.support.upstream import API_KEY, Answer, Call, FakeUpstream, error
from tests.support.wait import wait_for


async def test_local_provider_end_to_end(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    media_dir: Path,
    queue: Queue,
) -> None:
    project = (
        await client.post("/api/projects", json=project_body(3, aspect_ratio="1:1"), headers=alice)
    ).json()
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    run_worker(settings)
    status = await wait_done(client, project["id"], alice)
    assert status["status"] == "completed" and status["percent"] == 100
    assert status["succeeded"] == 3 and status["failed"] == 0
    for storyboard in status["storyboards"]:
        assert storyboard["attempts"] == 1 and storyboard["error"] is None
        response = await client.get(storyboard["image_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (1024, 1024)
    files = sorted(p.name for p in (media_dir / project["id"]).iterdir())
    assert files == [f"{n}-{j}.png" for n, j in zip((1, 2, 3), answer["job_ids"], strict=True)]
    # The storyboard commits first, the job's completion right after it.
    jobs = await wait_for(lambda: _all_succeeded(queue, answer["job_ids"]), timeout=5)
    assert jobs[-1].result["image_url"] == status["storyboards"][-1]["image_url"]
    # Progress says how far the project is, for the browser.
    status = await wait_done(client, project["id"], alice)
    progress = [s["progress"] for s in status["storyboards"]]
    assert all(p["percent"] == 100 and p["total"] == 3 for p in progress)
    assert max(p["completed"] for p in progress) == 3
    project_row = (await client.get(f"/api/projects/{project['id']}", headers=alice)).json()
    assert project_row["status"] == "completed"


async def test_content_policy_refusal_fails_one_shot_after_one_call(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
    queue: Queue,
    pool: asyncpg.Pool,
) -> None:
    def refuse_shot_2(call: Call) -> Answer | None:
        if call.shot_number == 2:
            return error(400, "The request failed because of a content policy")
        return None

    upstream.script = refuse_shot_2
    project = (
        await client.post("/api/projects", json=project_body(3, style="policy"), headers=alice)
    ).json()
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    worker_settings = http_settings(settings, upstream)
    run_worker(worker_settings)
    status = await wait_done(client, project["id"], alice)
    assert status["status"] == "partial"
    assert [s["status"] for s in status["storyboards"]] == ["success", "failed", "success"]
    refused = status["storyboards"][1]
    assert "content policy" in refused["error"] and refused["attempts"] == 1
    assert len(upstream.calls_for(project["id"], 2)) == 1
    job = await queue.get(answer["job_ids"][1])
    assert job is not None and job.state == "failed" and job.attempts == 1
    assert job.last_error is not None and "content policy" in job.last_error
    assert upstream.calls[0].headers["authorization"] == f"Bearer {API_KEY}"
    stored = await pool.fetchval(
        "SELECT status FROM storyboard.projects WHERE id = $1", uuid.UUID(project["id"])
    )
    assert stored == "partial"


async def test_a_superseded_job_writes_nothing(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    pool: asyncpg.Pool,
    queue: Queue,
) -> None:
    project = (await client.post("/api/projects", json=project_body(1), headers=alice)).json()
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    # Another job took the storyboard over (as a later regenerate would).
    await pool.execute("UPDATE storyboard.storyboards SET job_id = 424242")
    run_worker(settings)

    async def finished() -> bool:
        job = await queue.get(answer["job_ids"][0])
        return job is not None and job.state == "succeeded"

    await wait_for(finished, timeout=10, message="job finished")
    job = await queue.get(answer["job_ids"][0])
    assert job is not None and job.result == {"skipped": "superseded by job 424242"}
    row = await pool.fetchrow("SELECT status, image_url FROM storyboard.storyboards")
    assert row is not None and row["status"] == "generating" and row["image_url"] is None


async def _all_succeeded(queue: Queue, job_ids: list[int]) -> list[Job] | None:
    jobs = [await queue.get(job_id) for job_id in job_ids]
    if all(job is not None and job.state == "succeeded" for job in jobs):
        return [job for job in jobs if job is not None]
    return None


async def test_a_failing_progress_write_keeps_the_paid_image(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    pool: asyncpg.Pool,
    queue: Queue,
) -> None:
    # A real database fault on exactly the progress writes after the image came back (80: about
    # to store it; 100: stored): every other write of the job goes through.
    await pool.execute(
        """
        CREATE FUNCTION pg_temp_fail_progress() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'progress write refused (test fault)'; END $$;
        CREATE TRIGGER fail_progress BEFORE UPDATE OF progress ON pgqueue.jobs FOR EACH ROW
        WHEN (NEW.progress ->> 'percent' IN ('80', '100'))
        EXECUTE FUNCTION pg_temp_fail_progress();
        """
    )
    project = (await client.post("/api/projects", json=project_body(1), headers=alice)).json()
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    run_worker(settings)
    status = await wait_done(client, project["id"], alice)
    storyboard = status["storyboards"][0]
    assert storyboard["status"] == "success", storyboard
    assert (await client.get(storyboard["image_url"])).status_code == 200
    # The first attempt kept its image: nothing was paid for twice.
    jobs = await wait_for(lambda: _all_succeeded(queue, answer["job_ids"]), timeout=5)
    assert jobs[0].attempts == 1 and storyboard["attempts"] == 1
