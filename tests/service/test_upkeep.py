"""The service's periodic jobs, run by a real worker: nobody polls, the work still happens.

- `storyboard.expire`: a storyboard whose time is up turns `failed` (and its project's step
  status is set) although no client reads the project.
- `media.cleanup`: old image files that no storyboard refers to go; referred ones and young
  ones (a job writes its file before it commits) stay.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from pgqueue import JobState, Queue, Worker
from service import media, upkeep
from service.jobs import create_registry
from service.settings import ServiceSettings
from tests.service import support
from tests.support.wait import wait_for

OLD_S = upkeep.ORPHAN_AGE_S + 60


def test_the_service_registry_schedules_both() -> None:
    registry = create_registry(ServiceSettings())
    schedules = {p.kind: p.schedule.text for p in registry.periodics}
    assert schedules == {
        upkeep.EXPIRE_KIND: f"every {upkeep.EXPIRE_EVERY_S:g}s",
        upkeep.CLEANUP_KIND: upkeep.CLEANUP_SCHEDULE,
    }


async def _run_job(
    queue: Queue, kind: str, run_worker: Callable[..., Worker], settings: ServiceSettings
) -> dict[str, object]:
    job = await queue.enqueue(kind)
    run_worker(settings)

    async def finished() -> dict[str, object] | None:
        done = await queue.get(job.id)
        assert done is not None
        if done.state is JobState.SUCCEEDED:
            return dict(done.result or {})
        assert done.state in (JobState.QUEUED, JobState.RUNNING), done
        return None

    return await wait_for(finished, timeout=15, message=f"the {kind} job ran")


async def test_expiry_fails_a_storyboard_nobody_reads(
    settings: ServiceSettings,
    alice: dict[str, str],
    run_worker: Callable[..., Worker],
    queue: Queue,
    pool: asyncpg.Pool,
) -> None:
    async with support.api_client(settings) as client:
        body = support.project_body(2)
        project = (await client.post("/api/projects", json=body, headers=alice)).json()
    project_id = uuid.UUID(project["id"])
    # A generation whose jobs are gone (deleted by hand, say), long ago: nothing will finish it.
    await pool.execute(
        "UPDATE storyboard.storyboards SET status = 'generating', job_id = 987654321,"
        " updated_at = now() - interval '1 hour' WHERE project_id = $1",
        project_id,
    )
    await pool.execute(
        "UPDATE storyboard.projects SET status = 'generating' WHERE id = $1", project_id
    )
    result = await _run_job(queue, upkeep.EXPIRE_KIND, run_worker, settings)
    assert result == {"projects_repaired": 1}
    rows = await pool.fetch(
        "SELECT status, error FROM storyboard.storyboards WHERE project_id = $1", project_id
    )
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["error"] for r in rows), rows  # saying why, as a read's repair does
    step = await pool.fetchval("SELECT status FROM storyboard.projects WHERE id = $1", project_id)
    assert step != "generating", step


async def test_cleanup_removes_only_old_unreferenced_images(
    settings: ServiceSettings,
    alice: dict[str, str],
    run_worker: Callable[..., Worker],
    queue: Queue,
    pool: asyncpg.Pool,
    media_dir: Path,
) -> None:
    async with support.api_client(settings) as client:
        project = (
            await client.post("/api/projects", json=support.project_body(1), headers=alice)
        ).json()
    project_id = uuid.UUID(project["id"])
    kept = media.relative_path(project_id, 1, 10, "png")
    orphan = media.relative_path(project_id, 1, 9, "png")
    young = media.relative_path(project_id, 1, 11, "png")
    gone_project = media.relative_path(uuid.uuid4(), 1, 5, "png")
    for relative in (kept, orphan, young, gone_project):
        media.write_atomically(media_dir, relative, b"\x89PNG fake")
    stray = media_dir / "not-ours.txt"
    stray.write_text("left alone")
    past = time.time() - OLD_S
    for relative in (kept, orphan, gone_project):
        os.utime(media_dir / relative, (past, past))
    await pool.execute(
        "UPDATE storyboard.storyboards SET status = 'success', image_url = $2"
        " WHERE project_id = $1",
        project_id,
        media.url_for(kept),
    )
    result = await _run_job(queue, upkeep.CLEANUP_KIND, run_worker, settings)
    assert result == {"removed": 2}
    assert (media_dir / kept).exists() and (media_dir / young).exists()
    assert not (media_dir / orphan).exists() and not (media_dir / gone_project).exists()
    assert stray.read_text() == "left alone"
