"""The governor in the storyboard service: an upstream outage fails no shot and costs few calls,
users take turns for the fleet's slots, and a user's daily budget parks shots (never fails
them) until `python -m service budget` raises it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import asyncpg
import httpx
import pydantic
import pytest

from pgqueue import Breaker, Queue, Worker
from service.settings import IMAGE_RATE_LIMIT_KEY, ServiceSettings
from tests.service.support import (
    api_client,
    bearer,
    hold_service_schedules,
    http_settings,
    project_body,
    wait_done,
)
from tests.support import processes
from tests.support import settings as test_settings
from tests.support.upstream import Answer, Call, FakeUpstream, error
from tests.support.wait import wait_for


async def _generate(client: httpx.AsyncClient, headers: dict[str, str], shots: int) -> str:
    body = project_body(shots, aspect_ratio="1:1")
    project = (await client.post("/api/projects", json=body, headers=headers)).json()
    response = await client.post(
        f"/api/projects/{project['id']}/storyboards/generate", headers=headers
    )
    assert response.status_code == 202, response.text
    return str(project["id"])


def test_the_breaker_setting_reads_n_per_window_and_open(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().breaker == Breaker(5, 30.0, 30.0)
    monkeypatch.setenv("IMAGE_BREAKER", "off")
    assert ServiceSettings().breaker is None
    monkeypatch.setenv("IMAGE_BREAKER", "5 per minute")
    with pytest.raises(pydantic.ValidationError, match="IMAGE_BREAKER"):
        ServiceSettings()


async def test_the_worker_sets_the_breaker_and_an_adaptive_rate(
    settings: ServiceSettings, run_worker: Callable[..., Worker], queue: Queue
) -> None:
    run_worker(settings.model_copy(update={"image_rate_limit": "8/s"}))

    async def governed() -> bool:
        rows = await queue.rate_limits()
        return [
            (r["key"], r["adaptive"], r["ceiling"], r["breaker_state"], r["breaker_threshold"])
            for r in rows
        ] == [(IMAGE_RATE_LIMIT_KEY, True, 8, "closed", 5)]

    await wait_for(governed, message="the worker's lifespan set the governor")


async def test_an_outage_fails_no_shot_and_calls_little(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # Every call answers 500 for 3 s from the first one. Without the breaker, six shots of
    # three attempts fail within a few seconds, eighteen calls into the outage.
    down_until: list[float] = []

    def script(call: Call) -> Answer | None:
        if not down_until:
            down_until.append(call.started + 3.0)
        if call.started < down_until[0]:
            return error(500, "internal error")
        return None

    upstream.script = script
    worker_settings = http_settings(settings, upstream, image_breaker="3/30s,open=1s")
    run_worker(worker_settings)
    run_worker(worker_settings)
    project_id = await _generate(client, alice, 6)
    status = await wait_done(client, project_id, alice, timeout=30)
    assert status["status"] == "completed", status
    calls = upstream.calls_for(project_id)
    into_outage = [c for c in calls if c.started < down_until[0]]
    # The three that open it (the project's cap: three in flight), then a probe per open
    # period (1 s, 2 s, ...).
    assert len(into_outage) <= 3 + 3, [(c.shot_number, c.status) for c in calls]


async def test_users_take_turns_for_the_slots(
    db_url: str,
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # One user's 60 shots (no per-project cap in the way), then three users with 3 shots each:
    # six slots, 0.3 s calls. First come, first served, they would wait 3 s for the backlog.
    upstream.latency_s = 0.3
    api_settings = settings.model_copy(update={"storyboard_concurrency": 100})
    worker_settings = http_settings(api_settings, upstream)
    async with api_client(api_settings) as client:
        big = await bearer(db_url, "big")
        smalls = [await bearer(db_url, f"small{n}") for n in range(3)]
        run_worker(worker_settings)
        run_worker(worker_settings)
        backlog = await _generate(client, big, 60)
        await wait_for(lambda: len(upstream.calls_for(backlog)) >= 6, message="the backlog runs")
        began = time.monotonic()
        projects = await asyncio.gather(*(_generate(client, h, 3) for h in smalls))
        for project_id, headers in zip(projects, smalls, strict=True):
            await wait_done(client, project_id, headers, timeout=30)
        for project_id in projects:
            ended = max(c.ended or 0.0 for c in upstream.calls_for(project_id))
            # Within a few rounds of the upstream's latency, not behind 54 shots.
            assert ended - began < 1.8, ended - began
        await wait_done(client, backlog, big, timeout=60)


async def test_a_budget_parks_shots_until_it_is_raised(
    db_url: str,
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    queue: Queue,
) -> None:
    api_settings = settings.model_copy(update={"budget_free_per_day": Decimal(2)})
    async with api_client(api_settings) as client:
        alice = await bearer(db_url, "alice")
        run_worker(settings)
        project_id = await _generate(client, alice, 3)

        async def two_done() -> dict[str, object] | None:
            response = await client.get(
                f"/api/projects/{project_id}/storyboards/status", headers=alice
            )
            status: dict[str, object] = response.json()
            return status if status["succeeded"] == 2 else None

        await wait_for(two_done, timeout=15, message="the two shots the budget allows")

        async def settled() -> bool:
            (budget,) = await queue.budgets(["user:alice"])
            return bool(budget["spent"] == 2 and budget["reserved"] == 0)

        await wait_for(settled, message="their charges settled")
        (budget,) = await queue.budgets(["user:alice"])
        assert budget["spent"] == 2 and budget["amount"] == 2
        waiting = await queue.list_jobs(state="queued")
        assert len(waiting) == 1 and waiting[0].attempts == 0  # parked, not failed
        output = processes.run(
            processes.python_command(
                "-m", "service", "budget", "--user", "alice", "--per-day", "5"
            ),
            env={**test_settings.child_env(), "DATABASE_URL": db_url},
        )
        assert "5 credits per UTC day" in output
        status = await wait_done(client, project_id, alice, timeout=10)
        assert status["status"] == "completed"
        # --clear goes back to the tier's budget: none, in the command's environment.
        output = processes.run(
            processes.python_command("-m", "service", "budget", "--user", "alice", "--clear"),
            env={**test_settings.child_env(), "DATABASE_URL": db_url},
        )
        assert "no limit" in output
        assert await queue.budgets(["user:alice"]) == []


async def test_the_budget_command_refuses_bad_input(db_url: str) -> None:
    result = processes.completed(
        processes.python_command("-m", "service", "budget", "--user", "x", "--per-day", "-1"),
        env={**test_settings.child_env(), "DATABASE_URL": db_url},
    )
    assert result.returncode == 2 and "credits must be at least 0" in result.stderr


async def test_a_drain_obeys_the_budget_and_the_breaker(
    db_url: str, settings: ServiceSettings, upstream: FakeUpstream, queue: Queue
) -> None:
    # No daemon: the drain endpoint runs the shots, under the same rules as a worker.
    await hold_service_schedules(db_url)
    secret = {"Authorization": "Bearer cron-secret-0123456789abcdef"}
    drain_settings = http_settings(
        settings,
        upstream,
        cron_secret="cron-secret-0123456789abcdef",
        budget_free_per_day=Decimal(2),
        image_breaker="2/30s,open=60s",
    )
    async with api_client(drain_settings) as client:
        alice = await bearer(db_url, "alice")
        project_id = await _generate(client, alice, 3)
        answer = await client.post("/api/worker/drain", params={"budget_s": "3"}, headers=secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["succeeded"] == 2  # the third does not fit the day's budget
        status = (
            await client.get(f"/api/projects/{project_id}/storyboards/status", headers=alice)
        ).json()
        waiting = [s for s in status["storyboards"] if s["status"] == "generating"]
        assert [s["wait_reason"] for s in waiting] == ["over_budget"]
        # An outage: two failures open the breaker, and the next drain starts nothing.
        await queue.set_budget("user:alice", 100)
        upstream.script = lambda call: error(503, "down")
        bob = await bearer(db_url, "bob")
        await _generate(client, bob, 4)
        first = (
            await client.post("/api/worker/drain", params={"budget_s": "2"}, headers=secret)
        ).json()
        # Alice's two paid calls, then at most the drain's three in flight plus the one a slot
        # freed by the first failure may start before the second opens the breaker.
        assert first["succeeded"] == 0 and len(upstream.calls) <= 2 + 3 + 1
        calls = len(upstream.calls)
        second = (
            await client.post("/api/worker/drain", params={"budget_s": "1"}, headers=secret)
        ).json()
        assert second["ran"] == 0 and len(upstream.calls) == calls


async def test_a_shot_waiting_for_the_upstream_is_bounded_but_not_one_over_budget(
    db_url: str, settings: ServiceSettings, run_worker: Callable[..., Worker], queue: Queue
) -> None:
    # STORYBOARD_TIMEOUT_S bounds every wait (here the upstream's breaker, open for a minute)
    # but the budget's: a shot over budget waits for the next day or a raised budget.
    bounded = settings.model_copy(
        update={"storyboard_timeout_s": 8.0, "image_timeout_s": 1.0, "budget_free_per_day": None}
    )
    async with api_client(bounded) as client:
        alice = await bearer(db_url, "alice")
        carol = await bearer(db_url, "carol")
        run_worker(bounded.model_copy(update={"image_breaker": "1/30s,open=60s"}))
        await wait_for(lambda: _breaker_set(queue), message="the worker set the upstream's breaker")
        async with asyncpg_connect(db_url) as conn:
            await conn.execute(
                "UPDATE pgqueue.rate_limits SET breaker_state = 'open',"
                " breaker_until = now() + interval '60 seconds' WHERE key = $1",
                IMAGE_RATE_LIMIT_KEY,
            )
        down = await _generate(client, alice, 1)
        parked = await _generate(client, carol, 1)
        await queue.set_budget("user:carol", 0)  # the generate applied the tier's (none)
        status = await wait_done(client, down, alice, timeout=20)
        (shot,) = status["storyboards"]
        assert shot["status"] == "failed" and "still waiting to start after 8 s" in shot["error"]
        job = await queue.get(shot["job_id"])
        assert job is not None and job.state.value == "cancelled"  # it will not call later
        other = (
            await client.get(f"/api/projects/{parked}/storyboards/status", headers=carol)
        ).json()
        (waiting,) = other["storyboards"]
        # Held by the breaker too (which the answer names first), but never failed for it.
        assert waiting["status"] == "generating"
        job = await queue.get(waiting["job_id"])
        assert job is not None and job.state.value == "queued"


async def _breaker_set(queue: Queue) -> bool:
    return any(r["breaker_threshold"] == 1 for r in await queue.rate_limits())


@contextlib.asynccontextmanager
async def asyncpg_connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()
