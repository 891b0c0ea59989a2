"""The HTTP API in-process: projects, generate, status, jobs, stats, health, OpenAPI."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from pgqueue import Queue
from tests.service.support import project_body


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], **options: Any
) -> dict[str, Any]:
    response = await client.post("/api/projects", json=project_body(**options), headers=headers)
    assert response.status_code == 201, response.text
    project: dict[str, Any] = response.json()
    return project


async def test_create_get_and_list_projects(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    project = await _create(client, alice, shots=3)
    assert uuid.UUID(project["id"])
    assert project["status"] == "pending"
    assert [s["shot_number"] for s in project["shots"]] == [1, 2, 3]
    assert project["shots"][0]["characters"] == ["Ann", "Bo"]
    assert project["characters"][1]["reference_image_url"] == "https://example.com/bo.png"
    assert {s["status"] for s in project["storyboards"]} == {"pending"}

    fetched = await client.get(f"/api/projects/{project['id']}", headers=alice)
    assert fetched.status_code == 200
    assert fetched.json()["shots"] == project["shots"]

    listed = await client.get("/api/projects", headers=alice)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["projects"]] == [project["id"]]
    assert listed.json()["projects"][0]["shot_count"] == 3


async def test_generate_enqueues_one_job_per_shot_in_one_transaction(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool, queue: Queue
) -> None:
    project = await _create(client, alice, shots=4)
    response = await client.post(
        f"/api/projects/{project['id']}/storyboards/generate", headers=alice
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["total"] == 4 and answer["queued"] == 4 and len(answer["job_ids"]) == 4

    jobs = [await queue.get(job_id) for job_id in answer["job_ids"]]
    assert all(job is not None for job in jobs)
    for shot_number, job in enumerate(jobs, start=1):
        assert job is not None
        assert job.kind == "storyboard.generate"
        assert job.payload == {
            "project_id": project["id"],
            "shot_number": shot_number,
            "generation": 1,
        }
        assert job.idempotency_key == f"storyboard:{project['id']}:{shot_number}:1"
        assert job.concurrency_key == f"project:{project['id']}"
        assert job.concurrency_limit == 3
        assert job.max_attempts == 3
    rows = await pool.fetch(
        "SELECT shot_number, status, job_id FROM storyboard.storyboards "
        "WHERE project_id = $1 ORDER BY 1",
        uuid.UUID(project["id"]),
    )
    assert [(r["status"], r["job_id"]) for r in rows] == [
        ("generating", j) for j in answer["job_ids"]
    ]

    status = (
        await client.get(f"/api/projects/{project['id']}/storyboards/status", headers=alice)
    ).json()
    assert status["status"] == "generating" and status["generating"] == 4 and not status["done"]
    assert status["percent"] == 0


async def test_repeated_generate_returns_the_same_jobs(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=3)
    url = f"/api/projects/{project['id']}/storyboards/generate"
    first = (await client.post(url, headers=alice)).json()
    second = (await client.post(url, headers=alice, json={})).json()
    assert second["job_ids"] == first["job_ids"]
    assert second["queued"] == 0
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 3


async def test_twenty_concurrent_generate_calls_make_one_job_per_shot(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=5)
    url = f"/api/projects/{project['id']}/storyboards/generate"
    responses = await asyncio.gather(*(client.post(url, headers=alice) for _ in range(20)))
    assert {r.status_code for r in responses} == {202}
    answers = [r.json() for r in responses]
    assert len({tuple(a["job_ids"]) for a in answers}) == 1
    assert sum(a["queued"] for a in answers) == 5
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 5


async def test_generate_chosen_shots_and_force(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=3)
    project_id = uuid.UUID(project["id"])
    url = f"/api/projects/{project_id}/storyboards/generate"
    answer = (await client.post(url, headers=alice, json={"shot_numbers": [2]})).json()
    assert answer["total"] == 1 and answer["queued"] == 1
    # Pretend shot 2 succeeded: a new generate skips it, unless forced.
    await pool.execute(
        "UPDATE storyboard.storyboards SET status = 'success', image_url = '/media/x' "
        "WHERE project_id = $1 AND shot_number = 2",
        project_id,
    )
    await pool.execute("UPDATE pgqueue.jobs SET state = 'cancelled', finished_at = now()")
    again = (await client.post(url, headers=alice, json={"shot_numbers": [2]})).json()
    assert again["queued"] == 0 and again["job_ids"] == answer["job_ids"]
    forced = (
        await client.post(url, headers=alice, json={"shot_numbers": [2], "force": True})
    ).json()
    assert forced["queued"] == 1 and forced["job_ids"] != answer["job_ids"]
    unknown = await client.post(url, headers=alice, json={"shot_numbers": [2, 9]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_shots"


async def test_regenerate_enqueues_one_new_job(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=2)
    project_id = uuid.UUID(project["id"])
    await pool.execute(
        "UPDATE storyboard.storyboards SET status = 'success', image_url = '/media/x', job_id = 99 "
        "WHERE project_id = $1",
        project_id,
    )
    response = await client.post(
        f"/api/projects/{project_id}/storyboards/2/regenerate", headers=alice
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (
        answer["queued"] == 1 and answer["total"] == 1 and answer["job_id"] == answer["job_ids"][0]
    )
    # While it is pending, a second click does not enqueue another.
    again = (
        await client.post(f"/api/projects/{project_id}/storyboards/2/regenerate", headers=alice)
    ).json()
    assert again["queued"] == 0 and again["job_id"] == answer["job_id"]
    for bad in ("0", "1001", "99999999999999999999"):
        missing = await client.post(
            f"/api/projects/{project_id}/storyboards/{bad}/regenerate", headers=alice
        )
        assert missing.status_code in (404, 422), bad


async def test_pro_users_jobs_run_first(client: httpx.AsyncClient, user: Any, queue: Queue) -> None:
    free = await user("fran", tier="free")
    pro = await user("pat", tier="pro")
    free_project = await _create(client, free, shots=1)
    pro_project = await _create(client, pro, shots=1)
    free_job = (
        await client.post(f"/api/projects/{free_project['id']}/storyboards/generate", headers=free)
    ).json()
    pro_job = (
        await client.post(f"/api/projects/{pro_project['id']}/storyboards/generate", headers=pro)
    ).json()
    free_row = await queue.get(free_job["job_ids"][0])
    pro_row = await queue.get(pro_job["job_ids"][0])
    assert free_row is not None and pro_row is not None
    assert pro_row.priority < free_row.priority


async def test_status_fails_storyboards_whose_job_ended(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=2)
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    # A worker died on the last attempt: the reaper failed the job, no handler wrote anything.
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now(), attempts = 3, "
        "last_error = 'lease expired: worker w1 stopped heartbeating' WHERE id = $1",
        answer["job_ids"][0],
    )
    status = (
        await client.get(f"/api/projects/{project['id']}/storyboards/status", headers=alice)
    ).json()
    first = status["storyboards"][0]
    assert first["status"] == "failed"
    assert first["attempts"] == 3
    assert "lease expired" in first["error"]
    assert status["generating"] == 1 and not status["done"]
    # The repair was written, not only shown.
    stored = await pool.fetchval(
        "SELECT status FROM storyboard.storyboards WHERE job_id = $1", answer["job_ids"][0]
    )
    assert stored == "failed"

    # Generate again: the failed shot gets a new job, the pending one keeps its own.
    again = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    assert again["queued"] == 1
    assert again["job_ids"][1] == answer["job_ids"][1]
    assert again["job_ids"][0] != answer["job_ids"][0]


async def test_status_times_out_storyboards_without_a_live_job(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=2)
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    # Job 1 vanished (deleted by hand) long ago; job 2 is queued, since just now: it stays
    # generating.
    await pool.execute("DELETE FROM pgqueue.jobs WHERE id = $1", answer["job_ids"][0])
    await pool.execute(
        "UPDATE storyboard.storyboards SET updated_at = now() - interval '10 minutes' "
        "WHERE project_id = $1 AND shot_number = 1",
        uuid.UUID(project["id"]),
    )
    status = (
        await client.get(f"/api/projects/{project['id']}/storyboards/status", headers=alice)
    ).json()
    assert status["storyboards"][0]["status"] == "failed"
    assert "timed out" in status["storyboards"][0]["error"]
    assert status["storyboards"][1]["status"] == "generating"
    # A job still waiting to start past the limit (a backlog, the upstream's breaker, a paused
    # queue) is bounded too: its storyboard fails, saying so, and the job is cancelled.
    await pool.execute(
        "UPDATE storyboard.storyboards SET updated_at = now() - interval '10 minutes' "
        "WHERE project_id = $1",
        uuid.UUID(project["id"]),
    )
    status = (
        await client.get(f"/api/projects/{project['id']}/storyboards/status", headers=alice)
    ).json()
    assert "still waiting to start after 300 s" in status["storyboards"][1]["error"]
    assert status["done"] and status["status"] == "failed" and status["failed"] == 2
    job = await pool.fetchval(
        "SELECT state::text FROM pgqueue.jobs WHERE id = $1", answer["job_ids"][1]
    )
    assert job == "cancelled"
    project_row = (await client.get(f"/api/projects/{project['id']}", headers=alice)).json()
    assert project_row["status"] == "failed"


async def test_job_endpoint_and_queue_stats(
    client: httpx.AsyncClient, alice: dict[str, str], user: Any
) -> None:
    project = await _create(client, alice, shots=2)
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    job = await client.get(f"/api/jobs/{answer['job_ids'][0]}", headers=alice)
    assert job.status_code == 200
    assert job.json()["state"] == "queued" and job.json()["kind"] == "storyboard.generate"

    bob = await user("bob")
    admin = await user("root", admin=True)
    assert (await client.get(f"/api/jobs/{answer['job_ids'][0]}", headers=bob)).status_code == 404
    assert (await client.get(f"/api/jobs/{answer['job_ids'][0]}", headers=admin)).status_code == 200
    assert (await client.get("/api/jobs/12345", headers=admin)).status_code == 404
    assert (await client.get("/api/jobs/99999999999999999999999", headers=admin)).status_code == 404

    assert (await client.get("/api/queue/stats", headers=alice)).status_code == 403
    stats = await client.get("/api/queue/stats", headers=admin)
    assert stats.status_code == 200
    assert stats.json()["queues"]["default"] == {
        "waiting": 2,
        "delayed": 0,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }


async def test_health_readiness_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "/api/projects/{project_id}/storyboards/generate" in document["paths"]
    assert "ProjectIn" in document["components"]["schemas"]


async def test_readyz_answers_503_when_the_database_is_gone(
    client: httpx.AsyncClient, admin_url: str, db_url: str
) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        name = db_url.rsplit("/", 1)[1]
        # Refuse new connections, then end the pool's: the database no longer answers.
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await conn.close()


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "x/../../secret.png", "%2e%2e/%2e%2e/etc/passwd", "a.png"]
)
async def test_media_paths_cannot_escape(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"/media/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_another_users_reads_repair_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], user: Any, pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=2)
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    # A stale shot: its job failed for good and no hook wrote it.
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now(), attempts = 3, "
        "last_error = 'lease expired' WHERE id = $1",
        answer["job_ids"][0],
    )
    bob = await user("bob")
    before = await pool.fetch(
        "SELECT * FROM storyboard.storyboards WHERE project_id = $1 ORDER BY shot_number",
        uuid.UUID(project["id"]),
    )
    project_before = await pool.fetchrow(
        "SELECT * FROM storyboard.projects WHERE id = $1", uuid.UUID(project["id"])
    )
    for method, path in [
        ("GET", f"/api/projects/{project['id']}/storyboards/status"),
        ("GET", f"/api/projects/{project['id']}"),
        ("POST", f"/api/projects/{project['id']}/storyboards/generate"),
        ("POST", f"/api/projects/{project['id']}/storyboards/1/regenerate"),
    ]:
        response = await client.request(method, path, headers=bob)
        assert response.status_code == 404, (path, response.text)
    # Bob's 404s left Alice's rows exactly as they were.
    after = await pool.fetch(
        "SELECT * FROM storyboard.storyboards WHERE project_id = $1 ORDER BY shot_number",
        uuid.UUID(project["id"]),
    )
    assert [dict(r) for r in after] == [dict(r) for r in before]
    assert dict(
        await pool.fetchrow("SELECT * FROM storyboard.projects WHERE id = $1", project_before["id"])
    ) == dict(project_before)
    # Alice's own read repairs it, and her project answer shows the repaired state.
    shown = (await client.get(f"/api/projects/{project['id']}", headers=alice)).json()
    assert shown["storyboards"][0]["status"] == "failed"
    assert "lease expired" in shown["storyboards"][0]["error"]


async def test_readyz_keeps_the_database_error_to_the_log(
    client: httpx.AsyncClient, admin_url: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(admin_url)
    name = db_url.rsplit("/", 1)[1]
    try:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        with caplog.at_level("WARNING", logger="service.api"):
            response = await client.get("/readyz")
    finally:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await conn.close()
    assert response.status_code == 503
    assert response.json() == {
        "error": {"code": "not_ready", "message": "the database is unavailable", "details": []}
    }
    assert name not in response.text
    assert any("readiness check failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("extension", "content_type"),
    [("png", "image/png"), ("jpg", "image/jpeg"), ("webp", "image/webp")],
)
async def test_media_answers_say_their_type_and_forbid_sniffing(
    client: httpx.AsyncClient, media_dir: Path, extension: str, content_type: str
) -> None:
    relative = f"{uuid.uuid4()}/1-7.{extension}"
    (media_dir / relative).parent.mkdir(parents=True)
    # Bytes that a browser sniffing them would take for HTML.
    (media_dir / relative).write_bytes(b"<html><script>alert(1)</script>")
    response = await client.get(f"/media/{relative}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_owners_see_the_one_line_error_admins_the_traceback(
    client: httpx.AsyncClient, alice: dict[str, str], user: Any, pool: asyncpg.Pool
) -> None:
    project = await _create(client, alice, shots=1)
    answer = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/service/jobs.py", line 113, in generate_storyboard\n'
        "    image = await state.provider.generate(request)\n"
        "service.images.RetryableImageError: upstream answered 503\n"
    )
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now(), attempts = 3, "
        "last_error = $2 WHERE id = $1",
        answer["job_ids"][0],
        traceback,
    )
    path = f"/api/jobs/{answer['job_ids'][0]}"
    owner = (await client.get(path, headers=alice)).json()
    assert owner["last_error"] == "service.images.RetryableImageError: upstream answered 503"
    admin = (await client.get(path, headers=await user("root", admin=True))).json()
    assert admin["last_error"] == traceback
