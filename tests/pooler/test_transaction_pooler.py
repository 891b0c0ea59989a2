"""The service through a real PgBouncer in transaction mode, as on Supabase's pooler.

Everything goes through the pooler: the migrations, create-token, the API, two workers (one
with a direct URL for LISTEN, one that only polls). Mid-run one worker is killed with
SIGKILL and Postgres restarts behind the pooler; every shot must still end `success`. And a
user who forgets DATABASE_POOL_MODE is told to set it, not shown a stack trace.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devserver.embedded import EmbeddedPostgres
from service.payloads import JOB_KIND
from tests.pooler.conftest import STARTUP_TIMEOUT_S, pooled_env, start_api
from tests.service.support import project_body
from tests.support import settings
from tests.support.pgbouncer import PgBouncer
from tests.support.processes import Processes, completed, python_command, run
from tests.support.upstream import FakeUpstream
from tests.support.wait import wait_for

SHOTS = 18
UPSTREAM_LATENCY_S = 0.3
OUTAGE_S = 2.5  # longer than the tests' 2 s lease: every lease has run out on return
RUN_TIMEOUT_S = 90

pytestmark = pytest.mark.timeout(240)


def _migrate(env: dict[str, str]) -> None:
    run(python_command("-m", "alembic", "upgrade", "head"), env={**settings.child_env(), **env})


def _create_token(env: dict[str, str], user: str = "pooled") -> str:
    output = run(
        python_command("-m", "service", "create-token", "--user", user, "--tier", "pro"),
        env={**settings.child_env(), **env},
        timeout=STARTUP_TIMEOUT_S,
    )
    return output.strip().splitlines()[-1]


async def _json(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
    try:
        response = await client.get(path, headers=headers)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


async def test_the_service_end_to_end_through_pgbouncer(
    server: EmbeddedPostgres,
    bouncer: PgBouncer,
    direct_url: str,
    pooled_url: str,
    processes: Processes,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    upstream.latency_s = UPSTREAM_LATENCY_S
    env = settings.service_env(
        pooled_url, tmp_path / "media", upstream, **settings.WORKER_ENV, **pooled_env(pooled_url)
    )
    _migrate(env)
    headers = {"Authorization": f"Bearer {_create_token(env)}"}
    base_url = await start_api(processes, env)
    listening = processes.service(
        "worker", "--concurrency", "3", name="worker-listening",
        env={**env, "DATABASE_DIRECT_URL": direct_url},
    )  # fmt: skip
    polling = processes.service("worker", "--concurrency", "3", name="worker-polling", env=env)

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as api:
        created = await api.post("/api/projects", json=project_body(SHOTS), headers=headers)
        assert created.status_code == 201, created.text
        project_id = created.json()["id"]
        status_path = f"/api/projects/{project_id}/storyboards/status"
        generated = await api.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=headers
        )
        assert generated.status_code == 202, generated.text

        async def some_succeeded() -> bool:
            status = await _json(api, status_path, headers)
            return status is not None and status["succeeded"] >= 3

        await wait_for(some_succeeded, timeout=30, message="a few shots succeeded")
        listening.kill()  # SIGKILL: its jobs come back after their lease
        await asyncio.to_thread(server.stop)  # and Postgres restarts behind the pooler
        await asyncio.sleep(OUTAGE_S)  # the outage's length is the point here
        await asyncio.to_thread(server.start)

        async def done() -> dict[str, Any] | None:
            status = await _json(api, status_path, headers)
            return status if status is not None and status["done"] else None

        try:
            status = await wait_for(done, timeout=RUN_TIMEOUT_S, message="the run finished")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{processes.logs()}\n{bouncer.log()}") from None
        assert status["status"] == "completed", status
        assert [s["status"] for s in status["storyboards"]] == ["success"] * SHOTS
        image = await api.get(status["storyboards"][0]["image_url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        polling.check_alive()  # rode out the restart behind the pooler on its own

        # A new worker on the recovered system still takes new work.
        processes.service("worker", "--concurrency", "3", name="worker-new", env=env)
        again = await api.post(
            f"/api/projects/{project_id}/storyboards/2/regenerate", headers=headers
        )
        assert again.status_code == 202, again.text
        status = await wait_for(done, timeout=30, message="the regenerated shot finished")
        assert status["status"] == "completed"

    conn = await asyncpg.connect(direct_url)
    try:
        states = dict(
            await conn.fetch(
                "SELECT state::text, count(*) FROM pgqueue.jobs WHERE kind = $1 GROUP BY 1",
                JOB_KIND,
            )
        )
        overspent = await conn.fetchval(
            "SELECT count(*) FROM pgqueue.jobs WHERE attempts > max_attempts"
        )
    finally:
        await conn.close()
    assert states == {"succeeded": SHOTS + 1}, states
    assert overspent == 0


async def test_a_pooled_url_without_the_pool_mode_names_the_setting(
    bouncer: PgBouncer, direct_url: str, pooled_url: str, processes: Processes, tmp_path: Path
) -> None:
    # Migrated directly: what fails below is the missing setting, nothing else.
    _migrate({"DATABASE_URL": direct_url})
    env = {**settings.child_env(), "DATABASE_URL": pooled_url}
    # asyncpg names its statements __asyncpg_stmt_1__, 2, ... in every process, and the pooler
    # keeps them on its server connections: once each of them carries one, the next process's
    # first statement collides. Every run must either work or name the setting.
    outcomes = []
    for n in range(bouncer.pool_size + 2):
        result = completed(
            python_command("-m", "service", "create-token", "--user", f"user{n}"),
            env=env,
            timeout=STARTUP_TIMEOUT_S,
        )
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode != 0:
            assert result.returncode == 2, result.stderr
            assert "DATABASE_POOL_MODE=transaction" in result.stderr, result.stderr
        outcomes.append(result.returncode)
    assert 2 in outcomes, f"no collision in {len(outcomes)} runs: {outcomes}"

    # The API answers 503 naming the setting (and the log says it too).
    token = _create_token({"DATABASE_URL": direct_url}, "api-user")
    headers = {"Authorization": f"Bearer {token}"}
    base_url = await start_api(processes, {"DATABASE_URL": pooled_url}, name="api-unset")
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as api:
        answers = await asyncio.gather(
            *(api.get("/api/projects", headers=headers) for _ in range(30))
        )
    failed = [a for a in answers if a.status_code != 200]
    assert failed, "no request met a collision"
    for answer in failed:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "database_misconfigured"
        assert "DATABASE_POOL_MODE=transaction" in error["message"]

    # A worker stops with exit status 2 and says which setting.
    worker_env = {
        "DATABASE_URL": pooled_url,
        **settings.WORKER_ENV,
        "PGQUEUE_POLL_INTERVAL_S": "0.05",
    }
    workers = [processes.worker("service.jobs:registry", env=worker_env) for _ in range(3)]
    codes = [await worker.exited(STARTUP_TIMEOUT_S) for worker in workers]
    assert set(codes) == {2}, (codes, processes.logs())
    assert all("DATABASE_POOL_MODE" in worker.output() for worker in workers)
