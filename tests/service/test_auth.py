"""Every /api/ route needs a token; users see only their own projects and jobs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from tests.service.support import project_body
from tests.support.processes import ROOT

PROJECT = "00000000-0000-0000-0000-000000000001"
API_ROUTES = [
    ("GET", "/api/projects"),
    ("POST", "/api/projects"),
    ("GET", f"/api/projects/{PROJECT}"),
    ("POST", f"/api/projects/{PROJECT}/storyboards/generate"),
    ("POST", f"/api/projects/{PROJECT}/storyboards/1/regenerate"),
    ("GET", f"/api/projects/{PROJECT}/storyboards/status"),
    ("GET", "/api/jobs/1"),
    ("GET", "/api/queue/stats"),
]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_api_routes_need_a_valid_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    for authorization in [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer wrong",
        "Bearer " + "x" * 5000,
    ]:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await client.request(method, path, headers=headers, json=project_body())
        assert response.status_code == 401, authorization
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_users_see_only_their_own_projects(
    client: httpx.AsyncClient, alice: dict[str, str], user: Any
) -> None:
    bob = await user("bob")
    project = (await client.post("/api/projects", json=project_body(), headers=alice)).json()
    generated = (
        await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    ).json()
    base = f"/api/projects/{project['id']}"
    for method, path in [
        ("GET", base),
        ("GET", f"{base}/storyboards/status"),
        ("POST", f"{base}/storyboards/generate"),
        ("POST", f"{base}/storyboards/1/regenerate"),
        ("GET", f"/api/jobs/{generated['job_ids'][0]}"),
    ]:
        response = await client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
    assert (await client.get("/api/projects", headers=bob)).json() == {"projects": []}
    # A second token of the same user sees the same projects.
    alice_again = await user("alice")
    assert (await client.get(base, headers=alice_again)).status_code == 200


async def test_create_token_cli_prints_the_token_and_stores_its_hash(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "create-token", "--user", "carol", "--tier", "pro"],
        cwd=ROOT,
        env={"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sbt_") and len(token) > 30
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT * FROM storyboard.api_tokens WHERE user_name = 'carol'")
        assert row is not None
        assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(dict(row))
        assert row["tier"] == "pro" and not row["is_admin"]
    finally:
        await conn.close()


def test_create_token_cli_rejects_bad_arguments(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "create-token", "--user", "x", "--tier", "gold"],
        cwd=ROOT,
        env={"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "gold" in result.stderr
