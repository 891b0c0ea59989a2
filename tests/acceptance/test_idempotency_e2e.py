"""Never pay twice for one image, with real worker processes killed by SIGKILL: one charged
generation per shot, whether the worker died while its call was in flight (the next attempt's
call carries the same Idempotency-Key) or after the answer was stored (the next attempt reads
the job's checkpoint and calls nobody)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from pgqueue import Queue
from service.settings import ServiceSettings
from tests.service import support
from tests.support import settings
from tests.support.processes import Process, Processes
from tests.support.upstream import FakeUpstream
from tests.support.wait import wait_for

REGISTRY = "service.jobs:registry"
SHOTS = 3
# Attempts enough for the 409s a re-claimed shot meets while the dead worker's call is still
# in progress (each spends one; the backoff starts at 0.05 s).
MAX_ATTEMPTS = 10

StartWorker = Callable[..., Process]


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def client(db_url: str, media_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    api = ServiceSettings(database_url=db_url, media_dir=media_dir, max_attempts=MAX_ATTEMPTS)
    async with support.api_client(api) as c:
        yield c


@pytest.fixture
async def alice(db_url: str) -> dict[str, str]:
    return await support.bearer(db_url, "alice")


@pytest.fixture
def start_worker(
    db_url: str, upstream: FakeUpstream, media_dir: Path, processes: Processes
) -> StartWorker:
    """`start_worker(*args)`: a storyboard worker process on the fake upstream."""
    env = settings.service_env(db_url, media_dir, upstream, **settings.WORKER_ENV)

    def start(*args: str) -> Process:
        return processes.worker(REGISTRY, *args, env=env)

    return start


async def _generate(client: httpx.AsyncClient, alice: dict[str, str]) -> tuple[str, dict[int, str]]:
    """A project of SHOTS shots, generated: its id and each shot's idempotency key."""
    body = support.project_body(SHOTS)
    project_id = (await client.post("/api/projects", json=body, headers=alice)).json()["id"]
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
    assert answer.status_code == 202, answer.text
    keys = {
        shot: f"storyboard-{project_id}-{shot}-{job_id}"
        for shot, job_id in enumerate(answer.json()["job_ids"], start=1)
    }
    return project_id, keys


async def _kill(process: Process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=5)


async def test_a_worker_killed_mid_call_costs_one_generation_per_shot(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    upstream: FakeUpstream,
    start_worker: StartWorker,
    processes: Processes,
) -> None:
    upstream.hold()  # every generation waits, in flight, until released
    doomed = start_worker("--concurrency", str(SHOTS))
    project_id, keys = await _generate(client, alice)

    def in_flight() -> bool:
        return sum(c.ended is None for c in upstream.calls_for(project_id)) == SHOTS

    await wait_for(in_flight, timeout=15, message="every shot's call in flight")
    await _kill(doomed)
    start_worker("--concurrency", str(SHOTS))

    # The dead worker's generations go on upstream: the new worker's calls, under the same
    # keys, are told they are in progress (409, retryable) instead of starting a second one.
    def refused_in_progress() -> bool:
        return all(
            any(c.status == 409 for c in upstream.calls_for(project_id, shot))
            for shot in range(1, SHOTS + 1)
        )

    await wait_for(refused_in_progress, timeout=20, message="a 409 for every shot")
    upstream.release()  # the dead worker's generations finish, charged, for nobody
    status = await support.wait_done(client, project_id, alice, timeout=20)

    assert status["status"] == "completed", processes.logs()
    assert upstream.charges_for(project_id) == {key: 1 for key in keys.values()}
    for shot, key in keys.items():
        calls = upstream.calls_for(project_id, shot)
        assert {c.idempotency_key for c in calls} == {key}
        # The held call, charged (its caller long dead), then 409s, then the answer replayed.
        assert calls[0].charged and calls[0].status == 200, calls[0]
        assert calls[-1].replayed and calls[-1].status == 200, calls[-1]
        assert not any(c.charged for c in calls[1:])


async def test_a_worker_killed_after_the_answer_was_stored_costs_no_call(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    upstream: FakeUpstream,
    start_worker: StartWorker,
    processes: Processes,
    media_dir: Path,
    queue: Queue,
) -> None:
    # MEDIA_DIR is a file: every attempt gets its answer, stores it, then fails to write it.
    media_dir.parent.mkdir(parents=True, exist_ok=True)
    media_dir.write_text("not a directory")
    doomed = start_worker("--concurrency", str(SHOTS))
    project_id, keys = await _generate(client, alice)
    job_ids = [int(key.rsplit("-", 1)[1]) for key in keys.values()]

    async def each_failed_once() -> bool:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        return all(job is not None and job.last_error is not None for job in jobs)

    await wait_for(each_failed_once, timeout=15, message="every shot's write failed")
    await _kill(doomed)  # kill -9 after the checkpoint, perhaps in the middle of an attempt
    media_dir.unlink()
    start_worker("--concurrency", str(SHOTS))
    status = await support.wait_done(client, project_id, alice, timeout=20)

    assert status["status"] == "completed", processes.logs()
    assert all(s["attempts"] >= 2 for s in status["storyboards"]), status
    # One call per shot in all, so one charge: no later attempt, of either worker, called.
    for shot in keys:
        assert len(upstream.calls_for(project_id, shot)) == 1
    assert upstream.charges_for(project_id) == {key: 1 for key in keys.values()}
    assert len(list(media_dir.rglob("*.png"))) == SHOTS
