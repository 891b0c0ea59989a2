"""Bounded paid work: a per-user cap of pending storyboard jobs, and no superseded images."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from pgqueue import JobState, Queue, Worker
from service.settings import ServiceSettings
from tests.service import support
from tests.support.wait import wait_for


async def _project(client: httpx.AsyncClient, headers: dict[str, str], shots: int) -> str:
    created = await client.post("/api/projects", json=support.project_body(shots), headers=headers)
    assert created.status_code == 201, created.text
    project_id: str = created.json()["id"]
    return project_id


async def test_past_the_per_user_cap_generate_answers_429_and_enqueues_nothing(
    settings: ServiceSettings,
    alice: dict[str, str],
    user: Callable[..., Awaitable[dict[str, str]]],
    pool: asyncpg.Pool,
) -> None:
    capped = settings.model_copy(update={"storyboard_max_pending_per_user": 3})
    async with support.api_client(capped) as client:
        first = await _project(client, alice, 2)
        second = await _project(client, alice, 2)
        generate = "/api/projects/{}/storyboards/generate"
        assert (await client.post(generate.format(first), headers=alice)).status_code == 202
        # 2 pending + 2 more > 3: refused whole, nothing enqueued.
        refused = await client.post(generate.format(second), headers=alice)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        error = refused.json()["error"]
        assert error["code"] == "too_many_pending" and "3" in error["message"]
        assert isinstance(error["details"], list)
        assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 2
        statuses = await pool.fetch("SELECT DISTINCT status FROM storyboard.storyboards")
        assert {r["status"] for r in statuses} == {"generating", "pending"}
        # Repeating a generate whose work is pending enqueues nothing, so it is not refused.
        again = await client.post(generate.format(first), headers=alice)
        assert again.status_code == 202 and again.json()["queued"] == 0
        # Up to the cap is fine; one more (a regenerate too) is not.
        one = await client.post(generate.format(second), json={"shot_numbers": [1]}, headers=alice)
        assert one.status_code == 202, one.text
        regenerate = await client.post(
            f"/api/projects/{second}/storyboards/2/regenerate", headers=alice
        )
        assert regenerate.status_code == 429, regenerate.text
        assert "Retry-After" in regenerate.headers
        assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 3
        # The cap is per user.
        bob = await user("bob")
        bobs = await _project(client, bob, 3)
        assert (await client.post(generate.format(bobs), headers=bob)).status_code == 202


async def test_retried_jobs_count_against_the_cap_and_their_storyboards_generate_again(
    settings: ServiceSettings, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    # The walk-around: cancel your queued jobs, read the status (the storyboards fail), retry
    # the jobs, generate again, and repeat: with a cap of 2, 8 paid calls were queued.
    capped = settings.model_copy(update={"storyboard_max_pending_per_user": 2})
    async with support.api_client(capped) as client:
        project_id = await _project(client, alice, 2)
        generate = f"/api/projects/{project_id}/storyboards/generate"
        first = (await client.post(generate, headers=alice)).json()["job_ids"]
        for job_id in first:
            cancelled = await client.post(f"/api/jobs/{job_id}/cancel", headers=alice)
            assert cancelled.status_code == 200, cancelled.text
        status = await client.get(f"/api/projects/{project_id}/storyboards/status", headers=alice)
        assert status.json()["status"] == "failed", status.json()
        second = await client.post(generate, headers=alice)
        assert second.status_code == 202 and second.json()["queued"] == 2, second.text
        # Two pending (the second generation's) and a cap of 2: no retry may add a third.
        for job_id in first:
            refused = await client.post(f"/api/jobs/{job_id}/retry", headers=alice)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert refused.json()["error"]["code"] == "too_many_pending"
        live = "SELECT count(*) FROM pgqueue.jobs WHERE state IN ('queued', 'running')"
        assert await pool.fetchval(live) == 2
        # Within the cap a retry is fine, and its storyboard reads generating from that commit.
        for job_id in second.json()["job_ids"]:
            await client.post(f"/api/jobs/{job_id}/cancel", headers=alice)
        status = await client.get(f"/api/projects/{project_id}/storyboards/status", headers=alice)
        assert status.json()["done"] is True, status.json()
        retried = await client.post(f"/api/jobs/{second.json()['job_ids'][0]}/retry", headers=alice)
        assert retried.status_code == 200, retried.text
        status = (
            await client.get(f"/api/projects/{project_id}/storyboards/status", headers=alice)
        ).json()
        assert status["done"] is False and status["status"] == "generating", status
        shot = next(s for s in status["storyboards"] if s["job_id"] == retried.json()["id"])
        assert shot["status"] == "generating" and shot["error"] is None, shot
        assert await pool.fetchval(live) == 1
        # The cap counts the retried job, however the storyboard got there: one more fits,
        # a second does not.
        assert (
            await client.post(generate, json={"shot_numbers": [2]}, headers=alice)
        ).status_code == 202
        assert (await client.post(f"/api/jobs/{first[0]}/retry", headers=alice)).status_code == 429
        assert await pool.fetchval(live) == 2


async def test_a_retry_from_the_dashboard_or_the_library_generates_the_storyboard_again(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    user: Callable[..., Awaitable[dict[str, str]]],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    pool: asyncpg.Pool,
) -> None:
    # Every retry runs pgqueue's one statement; the storyboard follows it in its transaction.
    project_id = await _project(client, alice, 2)
    status_path = f"/api/projects/{project_id}/storyboards/status"
    generated = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
    by_dashboard, by_library = generated.json()["job_ids"]
    for job_id in (by_dashboard, by_library):
        await client.post(f"/api/jobs/{job_id}/cancel", headers=alice)
    status = (await client.get(status_path, headers=alice)).json()
    assert status["done"] is True and status["status"] == "failed", status

    admin = await user("root", admin=True)
    token = admin["Authorization"].removeprefix("Bearer ")
    signed_in = await client.post("/dashboard/sign-in", data={"token": token})
    assert signed_in.status_code == 303, signed_in.text
    retried = await client.post(f"/dashboard/jobs/{by_dashboard}/retry")
    assert retried.status_code == 303, retried.text
    # What `python -m pgqueue retry` runs.
    assert (await Queue(pool).retry(by_library)).state == JobState.QUEUED

    status = (await client.get(status_path, headers=alice)).json()
    assert status["done"] is False and status["status"] == "generating", status
    assert [s["status"] for s in status["storyboards"]] == ["generating"] * 2, status
    assert [s["error"] for s in status["storyboards"]] == [None] * 2, status
    run_worker(settings)
    done = await support.wait_done(client, project_id, alice)
    assert done["status"] == "completed", done


async def test_a_superseded_image_is_deleted_once_the_new_one_is_stored(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    media_dir: Path,
) -> None:
    project_id = await _project(client, alice, 2)
    await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
    run_worker(settings)
    first: dict[str, Any] = await support.wait_done(client, project_id, alice)
    old_urls = [s["image_url"] for s in first["storyboards"]]
    for url in old_urls:
        assert (await client.get(url)).status_code == 200

    await client.post(f"/api/projects/{project_id}/storyboards/1/regenerate", headers=alice)
    await client.post(
        f"/api/projects/{project_id}/storyboards/generate", json={"force": True}, headers=alice
    )

    async def both_replaced() -> dict[str, Any] | None:
        status = await support.wait_done(client, project_id, alice)
        urls = [s["image_url"] for s in status["storyboards"]]
        return status if not set(urls) & set(old_urls) else None

    status = await wait_for(both_replaced, timeout=15, message="new images stored")
    new_urls = [s["image_url"] for s in status["storyboards"]]
    for url in new_urls:
        assert (await client.get(url)).status_code == 200
    for url in old_urls:
        assert (await client.get(url)).status_code == 404, url
    # One file per shot is left: the current one.
    names = sorted(p.name for p in (media_dir / project_id).iterdir())
    assert names == sorted(url.rsplit("/", 1)[1] for url in new_urls)
