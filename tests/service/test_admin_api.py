"""The admin surface of the API: `/api/jobs` (list, retry, cancel), `/api/queues` (list, pause,
resume, honoured by a drain), and the dashboard's sign-in, pages and actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from pgqueue import Queue
from service.settings import ServiceSettings
from tests.service import support
from tests.service.support import project_body

Headers = dict[str, str]
MakeUser = Callable[..., Awaitable[Headers]]


async def _generate(client: httpx.AsyncClient, headers: Headers, shots: int = 3) -> list[int]:
    created = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=headers)
    assert answer.status_code == 202, answer.text
    job_ids: list[int] = answer.json()["job_ids"]
    return job_ids


async def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


async def test_users_list_their_own_jobs_and_admins_all(
    client: httpx.AsyncClient, user: MakeUser, pool: asyncpg.Pool
) -> None:
    alice, bob, admin = await user("alice"), await user("bob"), await user("root", admin=True)
    mine = await _generate(client, alice, 3)
    theirs = await _generate(client, bob, 2)
    other = await Queue(pool).enqueue("mail.send", {"to": "x"}, queue="mail")

    listed = await client.get("/api/jobs", headers=alice)
    assert listed.status_code == 200, listed.text
    assert [j["id"] for j in listed.json()["jobs"]] == sorted(mine, reverse=True)
    assert listed.json()["next"] is None
    assert [j["id"] for j in (await client.get("/api/jobs", headers=bob)).json()["jobs"]] == sorted(
        theirs, reverse=True
    )
    nobody = await user("carol")
    assert (await client.get("/api/jobs", headers=nobody)).json() == {"jobs": [], "next": None}
    assert (await client.get("/api/jobs?kind=mail.send", headers=alice)).json()["jobs"] == []

    everything = (await client.get("/api/jobs", headers=admin)).json()["jobs"]
    assert [j["id"] for j in everything] == sorted([*mine, *theirs, other.id], reverse=True)
    only_mail = (await client.get("/api/jobs?queue=mail", headers=admin)).json()["jobs"]
    assert [j["id"] for j in only_mail] == [other.id]
    assert (await client.get("/api/jobs?state=failed", headers=admin)).json()["jobs"] == []

    # Pages: `next` is the `before` of the following page, until the last.
    seen, before = [], None
    while True:
        params = {"limit": "2", **({"before": str(before)} if before else {})}
        page = (await client.get("/api/jobs", params=params, headers=admin)).json()
        seen += [j["id"] for j in page["jobs"]]
        before = page["next"]
        if before is None:
            break
    assert seen == [j["id"] for j in everything]


async def test_bad_listing_parameters_answer_400_and_no_token_401(
    client: httpx.AsyncClient, user: MakeUser
) -> None:
    admin = await user("root", admin=True)
    for query, field in (
        ("state=delayed", "state"),
        ("state=QUEUED", "state"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("before=0", "before"),
        ("before=-5", "before"),
        ("before=99999999999999999999", "before"),
        ("queue=" + "q" * 129, "queue"),
        ("sort=id", "query"),
    ):
        answer = await client.get(f"/api/jobs?{query}", headers=admin)
        error = await _error(answer, 400, "bad_request")
        assert error["details"][0]["field"] == field, (query, error)
    for method, path in (
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs/1/retry"),
        ("POST", "/api/jobs/1/cancel"),
        ("GET", "/api/queues"),
        ("POST", "/api/queues/default/pause"),
        ("POST", "/api/queues/default/resume"),
    ):
        await _error(await client.request(method, path), 401, "unauthorized")


async def test_retry_and_cancel_for_the_owner_or_an_admin(
    client: httpx.AsyncClient, user: MakeUser
) -> None:
    alice, bob, admin = await user("alice"), await user("bob"), await user("root", admin=True)
    first, second, _ = await _generate(client, alice, 3)

    # Another user's job is not found, and stays as it was.
    await _error(await client.post(f"/api/jobs/{first}/cancel", headers=bob), 404, "not_found")
    await _error(await client.post(f"/api/jobs/{first}/retry", headers=bob), 404, "not_found")
    await _error(await client.post("/api/jobs/999999/cancel", headers=admin), 404, "not_found")
    assert (await client.get(f"/api/jobs/{first}", headers=alice)).json()["state"] == "queued"

    # Queued: a retry is a conflict; a cancel takes at once; a second cancel is a conflict.
    error = await _error(
        await client.post(f"/api/jobs/{first}/retry", headers=alice), 409, "conflict"
    )
    assert "queued" in error["message"]
    cancelled = await client.post(f"/api/jobs/{first}/cancel", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["finished_at"]
    error = await _error(
        await client.post(f"/api/jobs/{first}/cancel", headers=alice), 409, "conflict"
    )
    assert "cancelled" in error["message"]

    # Cancelled: retried with a fresh budget, by its owner; an admin may act on anyone's job.
    retried = await client.post(f"/api/jobs/{first}/retry", headers=alice)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "queued" and retried.json()["attempts"] == 0
    by_admin = await client.post(f"/api/jobs/{second}/cancel", headers=admin)
    assert by_admin.status_code == 200 and by_admin.json()["state"] == "cancelled"


async def test_queues_are_for_admins_and_a_paused_queue_is_honoured_by_drains(
    settings: ServiceSettings, user: MakeUser
) -> None:
    alice, admin = await user("alice", tier="pro"), await user("root", admin=True)
    drain_settings = settings.model_copy(update={"cron_secret": "s" * 32})
    async with support.api_client(drain_settings) as client:
        job_ids = await _generate(client, alice, 3)
        await _error(await client.get("/api/queues", headers=alice), 403, "forbidden")
        await _error(
            await client.post("/api/queues/default/pause", headers=alice), 403, "forbidden"
        )
        await _error(
            await client.post(f"/api/queues/{'q' * 129}/pause", headers=admin), 400, "bad_request"
        )

        listed = (await client.get("/api/queues", headers=admin)).json()["queues"]
        (default,) = listed
        assert default["name"] == "default" and default["paused"] is False
        assert default["waiting"] == 3 and default["oldest_waiting_s"] >= 0
        assert set(default) == {
            "name", "paused", "waiting", "delayed", "active", "completed", "failed",
            "cancelled", "oldest_waiting_s", "finished_last_5m",
        }  # fmt: skip

        paused = await client.post("/api/queues/default/pause", headers=admin)
        assert paused.status_code == 200 and paused.json()["paused"] is True
        drained = await client.post("/api/worker/drain?budget_s=1", headers=admin)
        assert drained.status_code == 200 and drained.json()["ran"] == 0, drained.text
        for job_id in job_ids:
            job = (await client.get(f"/api/jobs/{job_id}", headers=admin)).json()
            assert job["state"] == "queued" and job["attempts"] == 0

        resumed = await client.post("/api/queues/default/resume", headers=admin)
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        drained = await client.post("/api/worker/drain?budget_s=20", headers=admin)
        assert drained.json()["succeeded"] == 3, drained.text
        (after,) = (await client.get("/api/queues", headers=admin)).json()["queues"]
        assert after["completed"] == 3 and after["finished_last_5m"] == 3
        assert after["oldest_waiting_s"] is None


async def test_the_dashboard_signs_in_admins_only_and_acts_by_post(
    client: httpx.AsyncClient, user: MakeUser
) -> None:
    alice, admin = await user("alice"), await user("root", admin=True)
    first, second, _ = await _generate(client, alice, 3)

    page = await client.get("/dashboard/")
    assert page.status_code == 401 and "Sign in" in page.text
    assert "sign-out" not in page.text  # nothing to sign out of yet
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for token, status in (("", 400), ("sbt_wrong", 403), (alice["Authorization"][7:], 403)):
        answer = await client.post("/dashboard/sign-in", data={"token": token})
        assert answer.status_code == status, (token, answer.text)
        assert "pgqueue_dashboard" not in answer.headers.get("set-cookie", "")

    signed_in = await client.post("/dashboard/sign-in", data={"token": admin["Authorization"][7:]})
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard/" in cookie
    # A session key, not the admin's token, and a session that ends.
    assert admin["Authorization"][7:].lower() not in cookie and "max-age=" in cookie
    overview = await client.get("/dashboard/")
    assert overview.status_code == 200, overview.text
    assert 'data-queue="default"' in overview.text and f'data-job="{first}"' in overview.text
    assert "<svg" in overview.text
    assert (await client.get("/dashboard/?state=bogus")).status_code == 400
    assert (await client.get("/dashboard/?before=x")).status_code == 400
    job_page = await client.get(f"/dashboard/jobs/{first}")
    assert job_page.status_code == 200 and "project_id" in job_page.text
    # Every signed-in page offers to sign out, the job's page as well as the overview.
    for page in (overview, job_page):
        assert 'action="/dashboard/sign-out"' in page.text
    assert (await client.get("/dashboard/jobs/999999")).status_code == 404
    # A GET changes nothing; a cross-site POST is refused.
    assert (await client.get(f"/dashboard/jobs/{first}/cancel")).status_code == 405
    foreign = await client.post(
        f"/dashboard/jobs/{first}/cancel", headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert (await client.get(f"/api/jobs/{first}", headers=admin)).json()["state"] == "queued"

    # Actions go back where they came from (never elsewhere), saying what they did.
    cancel = await client.post(
        f"/dashboard/jobs/{first}/cancel", data={"next": "/dashboard/?state=queued"}
    )
    assert cancel.status_code == 303
    assert cancel.headers["location"] == f"/dashboard/?state=queued&done=cancelled&job={first}"
    assert (await client.get(f"/api/jobs/{first}", headers=admin)).json()["state"] == "cancelled"
    shown = await client.get(cancel.headers["location"])
    assert f"Job {first} is cancelled." in shown.text
    retry = await client.post(
        f"/dashboard/jobs/{first}/retry", data={"next": "https://evil.example/dashboard/"}
    )
    assert retry.headers["location"] == f"/dashboard/?done=retried&job={first}"
    conflict = await client.post(f"/dashboard/jobs/{second}/retry")
    assert conflict.status_code == 409 and "only failed or cancelled" in conflict.text
    pause = await client.post("/dashboard/queues/default/pause")
    assert pause.status_code == 303
    (queue,) = (await client.get("/api/queues", headers=admin)).json()["queues"]
    assert queue["paused"] is True
    assert 'data-part="paused"' in (await client.get("/dashboard/")).text

    foreign_out = await client.post(
        "/dashboard/sign-out", headers={"Origin": "https://evil.example"}
    )
    assert foreign_out.status_code == 403
    assert (await client.get("/dashboard/")).status_code == 200
    out = await client.post("/dashboard/sign-out")
    assert out.status_code == 303
    assert (await client.get("/dashboard/")).status_code == 401


async def test_the_openapi_document_lists_the_admin_endpoints(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"get"} <= set(paths["/api/jobs"])
    for path in (
        "/api/jobs/{job_id}/retry",
        "/api/jobs/{job_id}/cancel",
        "/api/queues/{name}/pause",
        "/api/queues/{name}/resume",
    ):
        assert "post" in paths[path], path
    assert "get" in paths["/api/queues"]
