"""IMAGE_RATE_LIMIT and 429s with several worker processes racing: the fake upstream, which
records each call's start, never sees more than N starts in any window of the period, and after
a 429 with `Retry-After: 3` no call starts for 3 s on any worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from pgqueue import Queue
from service.settings import ServiceSettings
from tests.service import support
from tests.service.support import project_body, wait_done
from tests.support import settings
from tests.support.processes import Process, Processes
from tests.support.upstream import Answer, Call, FakeUpstream, error, most_in_window

REGISTRY = "service.jobs:registry"
WORKERS = 3
# Seconds after a 429's answer in which calls may still start: those of jobs claimed before its
# pause committed, which were on their way (the throttle's write, then their handlers' lead;
# up to 130 ms measured with three processes on two cores).
WRITE_GRACE_S = 0.3

StartWorker = Callable[..., Process]


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def client(db_url: str, media_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    # A cap of 10 shots per project: the limit, not the cap, is what holds the calls back.
    app_settings = ServiceSettings(
        database_url=db_url, media_dir=media_dir, storyboard_concurrency=10
    )
    async with support.api_client(app_settings) as c:
        yield c


@pytest.fixture
async def alice(db_url: str) -> dict[str, str]:
    return await support.bearer(db_url, "alice")


@pytest.fixture
def start_worker(
    db_url: str, upstream: FakeUpstream, media_dir: Path, processes: Processes
) -> StartWorker:
    env = settings.service_env(db_url, media_dir, upstream, **settings.WORKER_ENV)

    def start(**extra: str) -> Process:
        return processes.worker(REGISTRY, "--concurrency", "4", env={**env, **extra})

    return start


async def _generate(client: httpx.AsyncClient, headers: dict[str, str], shots: int) -> str:
    project = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert project.status_code == 201, project.text
    project_id = str(project.json()["id"])
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=headers)
    assert answer.status_code == 202, answer.text
    return project_id


async def test_racing_workers_keep_the_upstream_within_its_limit(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    upstream: FakeUpstream,
    start_worker: StartWorker,
) -> None:
    # 3 processes x 4 slots could start 12 calls at once; IMAGE_RATE_LIMIT allows 5 a second.
    upstream.latency_s = 0.1
    workers = [start_worker(IMAGE_RATE_LIMIT="5/s") for _ in range(WORKERS)]
    project_id = await _generate(client, alice, 20)
    status = await wait_done(client, project_id, alice, timeout=30)
    for worker in workers:
        worker.check_alive()
    assert status["status"] == "completed", status
    starts = sorted(call.started for call in upstream.calls_for(project_id))
    assert len(starts) == 20
    assert most_in_window(starts, 1.0) <= 5, " ".join(f"{s - starts[0]:.3f}" for s in starts)
    assert starts[-1] - starts[0] >= 3.0  # four windows of five
    assert upstream.max_total_in_flight > 1  # the workers did race


async def test_a_429_pauses_every_worker_for_its_retry_after(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    upstream: FakeUpstream,
    start_worker: StartWorker,
    queue: Queue,
) -> None:
    # No limit: only the throttle holds the calls. The 5th call overall meets a 429 with
    # Retry-After: 3; three processes are ready to call meanwhile.
    upstream.latency_s = 0.05
    seen: list[Call] = []

    def script(call: Call) -> Answer | None:
        seen.append(call)
        return error(429, "rate limited", retry_after="3") if len(seen) == 5 else None

    upstream.script = script
    workers = [start_worker() for _ in range(WORKERS)]
    project_id = await _generate(client, alice, 16)
    status = await wait_done(client, project_id, alice, timeout=30)
    for worker in workers:
        worker.check_alive()
    assert status["status"] == "completed", status
    calls = upstream.calls_for(project_id)
    (refused,) = [c for c in calls if c.status == 429]
    assert refused.ended is not None
    during = [c for c in calls if refused.ended + WRITE_GRACE_S < c.started < refused.ended + 3.0]
    assert during == [], [c.started - refused.ended for c in during]
    assert [c for c in calls if c.started >= refused.ended + 3.0]  # and they resumed alone
    job = await queue.get(refused.job_id)
    assert job is not None and job.attempts == 1  # the throttled attempt was given back
