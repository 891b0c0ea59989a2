"""A job that failed for good fails its storyboard: the registry's failed and stalled hooks.

Each test reads the storyboard straight from its table, never through the API: an API read
runs the read-side repair, which would hide a hook that did nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from pgqueue import Event, Job, JobState, Queue, Worker
from service import storyboards
from service.jobs import fail_storyboard
from service.settings import ServiceSettings
from tests.service.support import project_body
from tests.support.wait import wait_for

SELECT_STORYBOARD = """
SELECT s.status, s.error, s.attempts, s.job_id, p.status AS project_status
FROM storyboard.storyboards AS s JOIN storyboard.projects AS p ON p.id = s.project_id
WHERE s.project_id = $1 AND s.shot_number = $2
"""

# A worker died holding the job: running, its lease lapsed, on the attempt given.
HELD_BY_A_DEAD_WORKER = """
UPDATE pgqueue.jobs
SET state = 'running', attempts = $2, lease_token = nextval('pgqueue.lease_tokens'),
    worker_id = 'w1', started_at = now(), lease_expires_at = now() - interval '1 s'
WHERE id = $1
"""


async def _generate(
    client: httpx.AsyncClient, headers: dict[str, str], shots: int = 1
) -> tuple[uuid.UUID, list[int]]:
    project = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=headers)
    assert answer.status_code == 202, answer.text
    return uuid.UUID(project_id), answer.json()["job_ids"]


async def _storyboard(pool: asyncpg.Pool, project_id: uuid.UUID, shot: int = 1) -> dict[str, Any]:
    record = await pool.fetchrow(SELECT_STORYBOARD, project_id, shot)
    assert record is not None
    return dict(record)


async def _job(queue: Queue, job_id: int) -> Job:
    job = await queue.get(job_id)
    assert job is not None
    return job


async def test_the_last_failed_attempt_fails_the_storyboard(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    pool: asyncpg.Pool,
    queue: Queue,
    tmp_path: Path,
) -> None:
    project_id, (job_id,) = await _generate(client, alice)
    # Every attempt renders its image and then fails to store it: a plain exception, retried.
    not_a_directory = tmp_path / "media-is-a-file"
    not_a_directory.write_text("")
    run_worker(settings.model_copy(update={"media_dir": not_a_directory}))

    async def failed() -> dict[str, Any] | None:
        storyboard = await _storyboard(pool, project_id)
        return storyboard if storyboard["status"] == "failed" else None

    storyboard = await wait_for(failed, timeout=15, message="storyboard failed by the hook")
    job = await _job(queue, job_id)
    assert job.state == JobState.FAILED and job.attempts == job.max_attempts == 3
    assert storyboard["attempts"] == 3 and storyboard["job_id"] == job_id
    # The last line of the traceback, readable: the exception's type and message.
    assert storyboard["error"].startswith("NotADirectoryError: "), storyboard["error"]
    assert "\n" not in storyboard["error"] and "Traceback" not in storyboard["error"]
    assert storyboard["project_status"] == "failed"  # the step status, set in the same go


async def test_retries_and_lost_leases_leave_the_storyboard_alone(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool, queue: Queue
) -> None:
    project_id, (job_id,) = await _generate(client, alice)
    # A failed attempt with a retry: the row as the worker wrote it, queued again.
    await pool.execute(
        "UPDATE pgqueue.jobs SET attempts = 1, last_error = 'boom' WHERE id = $1", job_id
    )
    retrying = await _job(queue, job_id)
    assert retrying.state == JobState.QUEUED
    # ... but the project's live streams hear of it (the shot waits again: its card says why).
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await pool.acquire()
    try:
        await listener.add_listener("storyboard_events", lambda *args: heard.put_nowait(args[3]))
        assert not await fail_storyboard(
            pool, Event("failed", job_id, job=retrying, error="boom", will_retry=True)
        )
        assert await asyncio.wait_for(heard.get(), timeout=5) == str(project_id)
    finally:
        await listener.reset()
        await pool.release(listener)
    # A lease this worker lost: the job as claimed, still running (someone else has it).
    lost = retrying._replace(state=JobState.RUNNING)
    assert not await fail_storyboard(pool, Event("stalled", job_id, job=lost, error="lease lost"))
    # An event without the row says nothing about the job's end.
    assert not await fail_storyboard(pool, Event("stalled", job_id, error="lease expired"))
    storyboard = await _storyboard(pool, project_id)
    assert storyboard["status"] == "generating" and storyboard["error"] is None


async def test_the_hook_is_fenced_by_the_storyboards_job(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool, queue: Queue
) -> None:
    project_id, (job_id,) = await _generate(client, alice)
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', attempts = 1, finished_at = now(),"
        " last_error = 'DoNotRetry: upstream refused the request' WHERE id = $1",
        job_id,
    )
    job = await _job(queue, job_id)
    # A later generate took the storyboard over: the old job's end must not touch it.
    await pool.execute("UPDATE storyboard.storyboards SET job_id = 424242")
    assert not await fail_storyboard(pool, Event("failed", job_id, job=job))
    assert (await _storyboard(pool, project_id))["status"] == "generating"
    # Its own job: failed once, with pgqueue's prefix dropped from the message.
    await pool.execute("UPDATE storyboard.storyboards SET job_id = $1", job_id)
    assert await fail_storyboard(pool, Event("failed", job_id, job=job))
    storyboard = await _storyboard(pool, project_id)
    assert storyboard["status"] == "failed"
    assert storyboard["error"] == "upstream refused the request"
    # A second delivery (or the read-side repair after it) changes nothing.
    assert not await fail_storyboard(pool, Event("failed", job_id, job=job))


async def test_a_reapers_final_stall_fails_the_storyboard(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    pool: asyncpg.Pool,
    queue: Queue,
) -> None:
    project_id, (last, retried, cancelled) = await _generate(client, alice, shots=3)
    await pool.execute(HELD_BY_A_DEAD_WORKER, last, 3)  # its last attempt: reaped as failed
    await pool.execute(HELD_BY_A_DEAD_WORKER, retried, 1)  # attempts left: requeued, rerun
    await pool.execute(HELD_BY_A_DEAD_WORKER, cancelled, 1)
    await pool.execute(
        "UPDATE pgqueue.jobs SET cancel_requested_at = now() WHERE id = $1", cancelled
    )
    run_worker(settings)

    async def settled() -> list[dict[str, Any]] | None:
        rows = [await _storyboard(pool, project_id, shot) for shot in (1, 2, 3)]
        return rows if all(r["status"] != "generating" for r in rows) else None

    first, second, third = await wait_for(settled, timeout=15, message="all three settled")
    assert (await _job(queue, last)).state == JobState.FAILED
    assert first["status"] == "failed" and first["attempts"] == 3
    assert first["error"] == "lease expired: worker w1 stopped heartbeating"
    # The requeued one was not failed by its (non-final) stall: it ran again and succeeded.
    assert second["status"] == "success" and second["error"] is None
    assert (await _job(queue, retried)).attempts == 2
    assert (await _job(queue, cancelled)).state == JobState.CANCELLED
    assert third["status"] == "failed"
    assert (await _storyboard(pool, project_id))["project_status"] == "partial"


async def test_a_malformed_payload_fails_its_job_clearly(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    user: Callable[..., Any],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    queue: Queue,
) -> None:
    job = await queue.enqueue(
        storyboards.JOB_KIND, {"project_id": "not-a-uuid", "shot_number": 1, "generation": 1}
    )
    run_worker(settings)

    async def ended() -> Job | None:
        current = await _job(queue, job.id)
        return current if current.state.is_terminal else None

    failed = await wait_for(ended, timeout=10, message="the malformed job ended")
    assert failed.state == JobState.FAILED and failed.attempts == 1  # no retry can read it
    assert failed.last_error is not None
    assert "malformed payload: project_id 'not-a-uuid' is not a UUID" in failed.last_error

    # Whose is it? Nobody's: a clear 404 for users, the job itself for admins; never a 500.
    response = await client.get(f"/api/jobs/{job.id}", headers=alice)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    admin = await user("root", admin=True)
    response = await client.get(f"/api/jobs/{job.id}", headers=admin)
    assert response.status_code == 200 and response.json()["state"] == "failed"
