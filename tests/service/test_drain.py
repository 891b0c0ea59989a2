"""The drain endpoint in-process: who may call it, what it accepts, and what it runs.

The end-to-end drain (no daemon, behind PgBouncer, overlapping drains, a drain killed) is in
tests/pooler/test_drain.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.payloads import JOB_KIND
from service.settings import ServiceSettings
from tests.service import support
from tests.service.support import project_body
from tests.support import settings as test_settings
from tests.support.ports import free_port
from tests.support.processes import Processes, completed, python_command, wait_ready
from tests.support.upstream import FakeUpstream
from tests.support.wait import wait_for

SECRET = "cron-secret-0123456789abcdef"
DRAIN = "/api/worker/drain"
STARTUP_ALLOWANCE_S = 3.0  # a fresh interpreter importing the service, on a loaded machine


@pytest.fixture(autouse=True)
async def _no_upkeep_jobs(db_url: str) -> None:
    """These tests count every job a drain runs: the service's periodic ones must not join."""
    await support.hold_service_schedules(db_url)


@pytest.fixture
def drain_settings(settings: ServiceSettings, upstream: FakeUpstream) -> ServiceSettings:
    """The fake upstream, and a cron secret."""
    return support.http_settings(settings, upstream, cron_secret=SECRET)


async def test_who_may_drain_and_bad_budgets(
    drain_settings: ServiceSettings,
    user: Callable[..., Awaitable[dict[str, str]]],
    db_url: str,
) -> None:
    alice = await user("alice")
    admin = await user("root", admin=True)
    async with support.api_client(drain_settings) as client:
        assert (await client.post(DRAIN)).status_code == 401
        wrong = {"Authorization": "Bearer not-the-secret-at-all"}
        assert (await client.post(DRAIN, headers=wrong)).status_code == 401
        refused = await client.post(DRAIN, headers=alice)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        secret = {"Authorization": f"Bearer {SECRET}"}
        for bad in ("0", "0.5", "301", "nan", "inf", "abc", ""):
            answer = await client.get(DRAIN, params={"budget_s": bad}, headers=secret)
            assert answer.status_code == 400, (bad, answer.text)
            assert "budget_s" in answer.json()["error"]["message"]
        for headers in (secret, admin):
            answer = await client.get(DRAIN, params={"budget_s": "1"}, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["ran"] == 0
    # A refused or empty drain changed nothing.
    conn = await asyncpg.connect(db_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pgqueue.jobs WHERE kind = $1", JOB_KIND) == 0
        )
    finally:
        await conn.close()


async def test_a_drain_runs_the_runnable_shots_and_answers_in_its_budget(
    drain_settings: ServiceSettings,
    upstream: FakeUpstream,
    user: Callable[..., Awaitable[dict[str, str]]],
) -> None:
    upstream.latency_s = 0.2
    alice = await user("alice", tier="pro")
    secret = {"Authorization": f"Bearer {SECRET}"}
    async with support.api_client(drain_settings) as client:
        created = await client.post("/api/projects", json=project_body(4), headers=alice)
        project_id = created.json()["id"]
        generated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=alice
        )
        assert generated.status_code == 202
        started = time.monotonic()
        answer = await client.post(DRAIN, params={"budget_s": "20"}, headers=secret)
        took_s = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ran"] == 4 and body["succeeded"] == 4, body
        assert body["failed"] == body["retried"] == body["released"] == 0
        assert took_s < 20, "a burst drain ends once nothing is runnable"
        status = await support.wait_done(client, project_id, alice)
        assert status["status"] == "completed"


async def test_a_drain_releases_what_its_budget_cannot_finish(
    drain_settings: ServiceSettings,
    upstream: FakeUpstream,
    user: Callable[..., Awaitable[dict[str, str]]],
    db_url: str,
) -> None:
    upstream.latency_s = 30.0  # no shot can finish within the budget
    alice = await user("alice", tier="pro")
    secret = {"Authorization": f"Bearer {SECRET}"}
    async with support.api_client(drain_settings) as client:
        created = await client.post("/api/projects", json=project_body(3), headers=alice)
        project_id = created.json()["id"]
        await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
        started = time.monotonic()
        answer = await client.post(DRAIN, params={"budget_s": "2"}, headers=secret)
        took_s = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert took_s <= 2 + 2, f"answered after {took_s:.2f}s, budget 2 s"
    assert body["ran"] == 3 and body["released"] == 3, body
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT state::text, attempts FROM pgqueue.jobs WHERE kind = $1", JOB_KIND
        )
    finally:
        await conn.close()
    # Back in the queue, their attempt not spent.
    assert [(r["state"], r["attempts"]) for r in rows] == [("queued", 0)] * 3


async def test_the_daemon_with_max_seconds_ends_in_time_and_releases(
    settings: ServiceSettings,
    upstream: FakeUpstream,
    user: Callable[..., Awaitable[dict[str, str]]],
    db_url: str,
    tmp_path: Path,
) -> None:
    # The same engine as the endpoint: `python -m pgqueue.worker ... --burst --max-seconds N`.
    upstream.latency_s = 30.0
    alice = await user("alice", tier="pro")
    async with support.api_client(support.http_settings(settings, upstream)) as client:
        created = await client.post("/api/projects", json=project_body(2), headers=alice)
        project_id = created.json()["id"]
        await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
    env = {
        **test_settings.child_env(),
        **test_settings.service_env(db_url, tmp_path / "media", upstream),
    }
    argv = python_command(
        "-m", "pgqueue.worker", "service.jobs:registry", "--burst", "--max-seconds", "2"
    )
    started = time.monotonic()
    done = await asyncio.to_thread(completed, argv, env=env, timeout=30)
    took_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # Interpreter start-up and imports come on top of the 2 s the worker itself may take.
    assert took_s < 2 + 2 + STARTUP_ALLOWANCE_S, f"took {took_s:.1f}s"
    assert "released" in done.stderr
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT state::text, attempts FROM pgqueue.jobs WHERE kind = $1", JOB_KIND
        )
    finally:
        await conn.close()
    assert [(r["state"], r["attempts"]) for r in rows] == [("queued", 0)] * 2


async def test_a_drain_past_the_limit_answers_429_at_once_and_runs_nothing(
    drain_settings: ServiceSettings,
    upstream: FakeUpstream,
    user: Callable[..., Awaitable[dict[str, str]]],
    db_url: str,
) -> None:
    # Each drain opens pools of its own: four overlapping ones took an API from 6 server
    # connections to 31. One process runs one at a time; the next call is told when to return.
    upstream.latency_s = 30.0  # the first drain's shots run until its budget ends
    alice = await user("alice", tier="pro")
    secret = {"Authorization": f"Bearer {SECRET}"}
    async with support.api_client(drain_settings) as client:
        created = await client.post("/api/projects", json=project_body(2), headers=alice)
        project_id = created.json()["id"]
        await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
        first = asyncio.create_task(client.post(DRAIN, params={"budget_s": "4"}, headers=secret))
        conn = await asyncpg.connect(db_url)
        # Bounded as a whole, and the first drain cancelled on a failure: otherwise the app's
        # shutdown waits on it, which the suite's per-test timeout cannot interrupt.
        try:
            async with asyncio.timeout(45):
                await _refuse_while_one_runs(client, conn, secret)
                answer = await first
                assert answer.status_code == 200, answer.text
                assert answer.json()["ran"] == 2 and answer.json()["released"] == 2
                # Once it has answered, the next drain may run.
                after = await client.post(DRAIN, params={"budget_s": "1"}, headers=secret)
                assert after.status_code == 200, after.text
        finally:
            first.cancel()
            await conn.close()


DRAIN_CONNECTIONS = 4  # the server connections one drain opens (service/drain.py)


async def _refuse_while_one_runs(
    client: httpx.AsyncClient, conn: asyncpg.Connection, secret: dict[str, str]
) -> None:
    running = "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'"

    async def both_running() -> bool:
        return bool(await conn.fetchval(running) == 2)

    await wait_for(both_running, timeout=10, message="the first drain runs both shots")
    connections = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    before = await conn.fetchval(connections)
    refused = await asyncio.gather(
        *(client.post(DRAIN, params={"budget_s": "4"}, headers=secret) for _ in range(3))
    )
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "drain_running"
        assert 1 <= int(answer.headers["Retry-After"]) <= 4
    # The refused calls opened no drain (its pools are 4 server connections; three would add
    # 12) and took no job. The API's own pool may grow by a connection or two as it serves
    # three requests at once (seen under the full suite's load: 6 to 7).
    assert await conn.fetchval(connections) < before + DRAIN_CONNECTIONS
    assert await conn.fetchval(running) == 2


GRACE_S = 2  # PGQUEUE_SHUTDOWN_GRACE_S of the API below


async def test_sigterm_to_the_api_releases_a_running_drains_jobs_within_the_grace(
    upstream: FakeUpstream, db_url: str, tmp_path: Path, processes: Processes
) -> None:
    # Before: uvicorn waited for the drain's request (its whole budget) before it stopped, so
    # an orchestrator's stop killed the API mid-drain and the shots' attempts were spent.
    upstream.latency_s = 60.0  # no shot finishes: each is running when the signal comes
    env = test_settings.service_env(
        db_url,
        tmp_path / "media",
        upstream,
        CRON_SECRET=SECRET,
        PGQUEUE_SHUTDOWN_GRACE_S=str(GRACE_S),
    )
    port = free_port()
    api = processes.service("api", "--port", str(port), name="api", env=env)
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/readyz", api)
    alice = await support.bearer(db_url, "alice", tier="pro")
    conn = await asyncpg.connect(db_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            created = await client.post("/api/projects", json=project_body(2), headers=alice)
            project_id = created.json()["id"]
            generated = await client.post(
                f"/api/projects/{project_id}/storyboards/generate", headers=alice
            )
            assert generated.status_code == 202, generated.text
            secret = {"Authorization": f"Bearer {SECRET}"}
            drain = asyncio.create_task(
                client.post(DRAIN, params={"budget_s": "120"}, headers=secret)
            )
            running = "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'"

            async def both_running() -> bool:
                api.check_alive()
                return bool(await conn.fetchval(running) == 2)

            await wait_for(both_running, timeout=15, message="the drain runs both shots")
            api.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            # The grace, then the release, then the answer: well before the budget.
            answer = await asyncio.wait_for(drain, timeout=GRACE_S + 8)
        took_s = time.monotonic() - stopped
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ran"] == 2 and body["released"] == 2, body
        assert took_s < GRACE_S + 5, f"answered {took_s:.1f}s after SIGTERM"
        # Stopped, not killed: uvicorn ends by re-raising the signal it handled.
        assert await api.exited(timeout=10) in (0, -signal.SIGTERM)
        assert "released" in api.output(), api.tail()
        rows = await conn.fetch(
            "SELECT state::text, attempts FROM pgqueue.jobs WHERE kind = $1", JOB_KIND
        )
        # Back in the queue, their attempt not spent.
        assert [(r["state"], r["attempts"]) for r in rows] == [("queued", 0)] * 2
    finally:
        await conn.close()
