"""The governor with real worker processes racing: an upstream outage opens the breaker for the
whole fleet (a few calls into it, not three per shot, and every shot succeeds after it), and a
user who arrives behind another's backlog takes turns with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.settings import ServiceSettings
from tests.service import support
from tests.service.support import project_body, wait_done
from tests.support import settings
from tests.support.processes import Process, Processes
from tests.support.upstream import Answer, Call, FakeUpstream, error
from tests.support.wait import wait_for

REGISTRY = "service.jobs:registry"

StartWorker = Callable[..., Process]


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def client(db_url: str, media_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    # No per-project cap in the way: the fleet's slots are what the users share.
    app_settings = ServiceSettings(
        database_url=db_url, media_dir=media_dir, storyboard_concurrency=100
    )
    async with support.api_client(app_settings) as c:
        yield c


@pytest.fixture
def start_worker(
    db_url: str, upstream: FakeUpstream, media_dir: Path, processes: Processes
) -> StartWorker:
    env = settings.service_env(db_url, media_dir, upstream, **settings.WORKER_ENV)

    def start(**extra: str) -> Process:
        return processes.worker(REGISTRY, "--concurrency", "3", env={**env, **extra})

    return start


async def _generate(client: httpx.AsyncClient, headers: dict[str, str], shots: int) -> str:
    project = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert project.status_code == 201, project.text
    project_id = str(project.json()["id"])
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=headers)
    assert answer.status_code == 202, answer.text
    return project_id


async def test_an_outage_opens_the_breaker_for_every_worker(
    client: httpx.AsyncClient, db_url: str, upstream: FakeUpstream, start_worker: StartWorker
) -> None:
    # Every call answers 500 for 4 s from the first. Three processes of three slots: nine
    # calls could be in flight; without the breaker the shots would spend their three
    # attempts each (27 calls) and fail.
    down_until: list[float] = []

    def script(call: Call) -> Answer | None:
        if not down_until:
            down_until.append(call.started + 4.0)
        return error(500, "internal error") if call.started < down_until[0] else None

    upstream.script = script
    upstream.latency_s = 0.05
    workers = [start_worker(IMAGE_BREAKER="3/30s,open=1s") for _ in range(3)]
    alice = await support.bearer(db_url, "alice")
    project_id = await _generate(client, alice, 9)
    status = await wait_done(client, project_id, alice, timeout=45)
    for worker in workers:
        worker.check_alive()
    assert status["status"] == "completed", status
    calls = upstream.calls_for(project_id)
    into = [c for c in calls if c.started < down_until[0]]
    # What was in flight when it opened (at most the fleet's nine slots), then one probe per
    # open period: 1 s, 2 s (the third, at 7 s, meets the upstream back).
    assert len(into) <= 9 + 2, sorted(round(c.started - calls[0].started, 2) for c in into)
    probes = [c for c in into if c.started > min(c.started for c in into) + 0.5]
    assert len(probes) <= 2


async def test_a_user_behind_a_backlog_takes_turns(
    client: httpx.AsyncClient, db_url: str, upstream: FakeUpstream, start_worker: StartWorker
) -> None:
    # Two processes of three slots, 0.4 s calls: a 60-shot backlog is 4 s of work. A user
    # who arrives after it would wait that long first come, first served.
    upstream.latency_s = 0.4
    workers = [start_worker() for _ in range(2)]
    big = await support.bearer(db_url, "big")
    small = await support.bearer(db_url, "small")
    backlog = await _generate(client, big, 60)
    await wait_for(lambda: len(upstream.calls_for(backlog)) >= 6, message="the backlog runs")
    began = time.monotonic()
    project_id = await _generate(client, small, 3)
    await wait_done(client, project_id, small, timeout=30)
    ended = max(c.ended or 0.0 for c in upstream.calls_for(project_id))
    assert ended - began < 3 * 0.4 + 0.8, ended - began  # within a few rounds of 0.4 s
    await asyncio.gather(wait_done(client, backlog, big, timeout=60))
    for worker in workers:
        worker.check_alive()
