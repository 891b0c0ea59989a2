"""The service's periodic jobs: what used to happen only when somebody read a project.

- `storyboard.expire` (every minute): storyboards whose time is up turn `failed` and their
  project's step status is set, even for a project nobody polls (`failures.reconcile`, the
  same repair a read does, under the same fence).
- `media.cleanup` (hourly): image files that no storyboard refers to any more are removed
  (a project deleted, or an image whose job lost its storyboard to a later one at commit).
  Only files older than `ORPHAN_AGE_S`: a job writes its file before it commits its
  storyboard, so a young file may be about to be referred to.

Both run under pgqueue's scheduler: once per tick across every worker and drain.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
import asyncpg

from pgqueue import JobContext, Queue, Registry
from service import failures, media, queries

logger = logging.getLogger("service.upkeep")

EXPIRE_KIND = "storyboard.expire"
EXPIRE_EVERY_S = 60.0  # a stale storyboard reads `failed` at most this long after its time
CLEANUP_KIND = "media.cleanup"
CLEANUP_SCHEDULE = "17 * * * *"  # hourly, off the full hour when other crons pile up
ORPHAN_AGE_S = 3600.0  # far longer than an attempt may take between its write and its commit


def register(registry: Registry) -> None:
    """Add the handlers and their schedules to `registry`."""
    registry.add(EXPIRE_KIND, expire_stale)
    registry.add(CLEANUP_KIND, clean_media)
    registry.periodic(EXPIRE_EVERY_S, EXPIRE_KIND)
    registry.periodic(CLEANUP_SCHEDULE, CLEANUP_KIND)


async def expire_stale(ctx: JobContext) -> dict[str, Any]:
    """Repair every project with a storyboard that nothing will finish."""
    pool: asyncpg.Pool = ctx.state.pool
    timeout_s: float = ctx.state.settings.storyboard_timeout_s
    project_ids = [
        r["project_id"] for r in await pool.fetch(queries.SELECT_STALE_PROJECTS, timeout_s)
    ]
    repaired = 0
    queue = Queue(pool)
    for project_id in project_ids:
        async with pool.acquire() as conn:
            repaired += await failures.reconcile(conn, queue, project_id, timeout_s)
    if repaired:
        logger.info(
            "%d project(s) had storyboards whose time was up",
            repaired,
            extra={"action": "storyboards_expired"},
        )
    return {"projects_repaired": repaired}


async def clean_media(ctx: JobContext) -> dict[str, Any]:
    """Remove old image files no storyboard refers to."""
    pool: asyncpg.Pool = ctx.state.pool
    media_dir: Path = ctx.state.settings.media_dir
    project_dirs = await anyio.to_thread.run_sync(_project_dirs, media_dir)
    removed: list[str] = []
    for project_id, directory in project_dirs:
        referenced = {
            r["image_url"] for r in await pool.fetch(queries.SELECT_PROJECT_IMAGE_URLS, project_id)
        }
        removed += await anyio.to_thread.run_sync(_remove_orphans, directory, referenced)
    if removed:
        logger.info(
            "removed %d image file(s) no storyboard refers to",
            len(removed),
            extra={"action": "media_cleaned"},
        )
    return {"removed": len(removed)}


def _project_dirs(media_dir: Path) -> list[tuple[uuid.UUID, Path]]:
    if not media_dir.is_dir():
        return []
    found = []
    for path in media_dir.iterdir():
        try:
            project_id = uuid.UUID(path.name)
        except ValueError:
            continue  # not ours: leave it
        if path.is_dir() and str(project_id) == path.name:
            found.append((project_id, path))
    return found


def _remove_orphans(directory: Path, referenced: set[str]) -> list[str]:
    cutoff = time.time() - ORPHAN_AGE_S
    removed = []
    for path in directory.iterdir():
        relative = f"{directory.name}/{path.name}"
        # Ours only (the names the service writes, and its temporary files), old enough.
        ours = media.is_media_path(relative) or path.name.startswith(".tmp-")
        if not ours or not path.is_file() or path.stat().st_mtime > cutoff:
            continue
        if media.url_for(relative) in referenced:
            continue
        path.unlink(missing_ok=True)
        removed.append(relative)
    return removed
