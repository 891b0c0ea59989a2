"""The storyboard domain: projects, the generate call, status, and the end of a generation.

The rules that keep a storyboard from staying `generating` for ever live here:

* `generate` marks storyboards `generating` and enqueues their jobs in one transaction, so
  either both happen or neither does;
* the job handler writes each success fenced by its lease (see `jobs.py`);
* `failures.fail_for_good` turns a storyboard `failed` once its job failed for good: the
  worker's `failed` and `stalled` hooks call it (see `jobs.py`), the one place that rule runs;
* `failures.reconcile` repairs, on read, only what no hook can see (see its docstring).

The project's step status has one home, `queries.FINISH_PROJECT`, run after every change.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import JobSpec, Queue, reports
from service import budgets, queries
from service.auth import User
from service.errors import ApiError, not_found
from service.failures import fail_stale, reconcile
from service.payloads import JOB_KIND, StoryboardPayload
from service.schemas import GenerateIn, ProjectIn
from service.settings import IMAGE_RATE_LIMIT_KEY, ServiceSettings

# Smaller runs first: a paying user's shots overtake the free backlog.
PRIORITY_BY_TIER = {"pro": 0, "free": 10}
LIST_LIMIT = 500  # projects returned by GET /api/projects
PENDING_RETRY_AFTER_S = 30  # seconds a user past the pending-jobs cap is told to wait


def parse_project_id(text: str) -> uuid.UUID:
    """The project id of a URL; a malformed one is simply not found."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise not_found("project") from None


def idempotency_key(project_id: uuid.UUID, shot_number: int, generation: int) -> str:
    """One job per shot per generation, whoever enqueues it and however often."""
    return f"storyboard:{project_id}:{shot_number}:{generation}"


async def create_project(pool: asyncpg.Pool, user: User, body: ProjectIn) -> dict[str, Any]:
    """Insert a project with its characters, shots and `pending` storyboards, atomically."""
    async with pool.acquire() as conn, conn.transaction():
        project = await conn.fetchrow(
            queries.INSERT_PROJECT, user.name, body.title, body.style, body.aspect_ratio
        )
        assert project is not None
        project_id = project["id"]
        if body.characters:
            await conn.execute(
                queries.INSERT_CHARACTERS,
                project_id,
                [c.name for c in body.characters],
                list(range(len(body.characters))),
                [c.description for c in body.characters],
                [c.reference_image_url for c in body.characters],
            )
        numbers = [s.shot_number for s in body.shots]
        await conn.execute(
            queries.INSERT_SHOTS,
            project_id,
            numbers,
            [s.description for s in body.shots],
            [s.duration_seconds for s in body.shots],
            [json.dumps(s.characters) for s in body.shots],
        )
        await conn.execute(queries.INSERT_STORYBOARDS, project_id, numbers)
        return await _project_json(conn, project)


async def list_projects(pool: asyncpg.Pool, user: User) -> list[dict[str, Any]]:
    """The user's projects, newest first, without their shots."""
    records = await pool.fetch(queries.LIST_PROJECTS, user.name, LIST_LIMIT)
    return [{**_project_summary(r), "shot_count": r["shot_count"]} for r in records]


async def get_project(
    pool: asyncpg.Pool, user: User, project_id: uuid.UUID, settings: ServiceSettings
) -> dict[str, Any]:
    """One of the user's projects with its characters, shots and storyboards."""
    async with pool.acquire() as conn:
        project = await _own_project(conn, Queue(pool), user, project_id, settings)
        return await _project_json(conn, project)


async def generate(
    pool: asyncpg.Pool,
    queue: Queue,
    settings: ServiceSettings,
    user: User,
    project_id: uuid.UUID,
    body: GenerateIn,
) -> dict[str, Any]:
    """Enqueue one job per shot that needs an image; answer the jobs of all requested shots.

    Shots already `generating` keep their job (no duplicate work: repeated and concurrent calls
    return the same ids); `success` shots are skipped unless `force`; `pending` and `failed`
    shots get a new job. The project's row lock serialises concurrent calls, and the
    idempotency key (project, shot, generation) backs it in the jobs table itself.
    """
    async with pool.acquire() as conn, conn.transaction():
        project = await conn.fetchrow(queries.LOCK_OWN_PROJECT, project_id, user.name)
        if project is None:
            raise not_found("project")
        # A storyboard whose job died for good must count as failed (and so be retried here),
        # not as pending work whose job id we would hand back.
        await fail_stale(conn, queue, project_id, settings.storyboard_timeout_s)
        storyboards = {
            r["shot_number"]: r for r in await conn.fetch(queries.SELECT_STORYBOARDS, project_id)
        }
        if body.shot_numbers is None:
            targets = sorted(storyboards)
        else:
            unknown = [n for n in body.shot_numbers if n not in storyboards]
            if unknown:
                raise ApiError(
                    422,
                    "unknown_shots",
                    f"the project has no shot(s) {', '.join(map(str, unknown))}",
                    details=[{"loc": ["shot_numbers"], "unknown": unknown}],
                )
            targets = list(body.shot_numbers)
        to_enqueue = [
            n
            for n in targets
            if storyboards[n]["status"] in ("pending", "failed")
            or (storyboards[n]["status"] == "success" and body.force)
        ]
        job_ids = {n: storyboards[n]["job_id"] for n in targets}
        if to_enqueue:
            await check_pending_cap(conn, user, len(to_enqueue), settings)
            generation = await conn.fetchval(queries.START_GENERATION, project_id)
            fairness = f"user:{user.name}" if settings.storyboard_fairness == "user" else None
            specs = [
                JobSpec(
                    kind=JOB_KIND,
                    payload=StoryboardPayload(project_id, n, generation).as_json(),
                    queue=settings.queue,
                    priority=PRIORITY_BY_TIER[user.tier],
                    max_attempts=settings.max_attempts,
                    # Fits within STORYBOARD_TIMEOUT_S (settings.check): a hung attempt ends
                    # before the storyboard's promise does, heartbeats or not.
                    timeout=timedelta(seconds=settings.storyboard_job_timeout_s),
                    idempotency_key=idempotency_key(project_id, n, generation),
                    concurrency_key=f"project:{project_id}",
                    concurrency_limit=settings.storyboard_concurrency,
                    # Every job calls the one upstream: IMAGE_RATE_LIMIT holds them all, and
                    # a 429 pauses them all (the workers set the key's limit at startup).
                    rate_limit_key=IMAGE_RATE_LIMIT_KEY,
                    # Users take turns for the fleet's slots (within a priority), so one
                    # user's backlog does not hold the others back.
                    fairness_key=fairness,
                    # Each call costs IMAGE_COST, reserved against the user's daily budget
                    # while it runs (with no budget the key has no row: no limit).
                    cost=settings.image_cost,
                    budget_keys=[budgets.budget_key(user.name)],
                )
                for n in to_enqueue
            ]
            jobs = await queue.enqueue_many(specs, conn=conn)
            await conn.execute(
                queries.MARK_GENERATING,
                project_id,
                generation,
                to_enqueue,
                [job.id for job in jobs],
            )
            job_ids.update(zip(to_enqueue, (job.id for job in jobs), strict=True))
            # The user's budget as the settings (or `python -m service budget`) say now; last,
            # so its row is locked only for the commit (the jobs are claimable from then on).
            await budgets.apply(conn, queue, settings, user.name, user.tier)
        await conn.execute(queries.FINISH_PROJECT, project_id)
    return {
        "project_id": str(project_id),
        "job_ids": [job_ids[n] for n in targets if job_ids[n] is not None],
        "total": len(targets),
        "queued": len(to_enqueue),
    }


async def check_pending_cap(
    conn: asyncpg.Connection,
    user: User,
    adding: int,
    settings: ServiceSettings,
    *,
    counted: int = 0,
) -> None:
    """Refuse (429) a generate (or a retry) that would take `user` past their cap of
    pending jobs: `adding` more than the storyboard jobs of theirs queued or running now, of
    which `counted` are the caller's own, already queued in its transaction (a retry's job).

    Every job is a paid upstream call: the cap bounds what one token can start. The user's
    lock is taken after the project's (the order every generate call takes them in) and held
    to the end of the caller's transaction, so concurrent calls on two projects cannot both
    pass the count.
    """
    await conn.execute(queries.LOCK_USER_GENERATIONS, user.name)
    pending: int = await conn.fetchval(queries.COUNT_USER_PENDING, user.name)
    cap = settings.storyboard_max_pending_per_user
    pending -= counted
    if pending + adding > cap:
        raise ApiError(
            429,
            "too_many_pending",
            f"{pending} storyboard job(s) of yours are pending and {adding} more would pass "
            f"the limit of {cap} (STORYBOARD_MAX_PENDING_PER_USER); retry once some finish",
            details=[{"pending": pending, "requested": adding, "limit": cap}],
            headers={"Retry-After": str(PENDING_RETRY_AFTER_S)},
        )


async def project_status(
    pool: asyncpg.Pool,
    queue: Queue,
    user: User,
    project_id: uuid.UUID,
    settings: ServiceSettings,
) -> dict[str, Any]:
    """The status answer of CONTRACT.md, after `reconcile`.

    Besides the storyboards' rows, one statement of pgqueue's (`Queue.explain_waits`) says
    why each generating shot's job waits, what each job was charged, and when each may be
    done: a status read is the ownership check, the lock-free stale check, the storyboards
    and that, whatever the project's size (the event streams read it after every change).
    """
    async with pool.acquire() as conn:
        project = await _own_project(conn, queue, user, project_id, settings)
        records = await conn.fetch(queries.SELECT_STORYBOARDS, project_id)
        job_ids = [r["job_id"] for r in records if r["job_id"] is not None]
        waits = await queue.explain_waits(job_ids, conn=conn) if job_ids else {}
    storyboards = [{**storyboard_json(r), **_wait_json(r, waits.get(r["job_id"]))} for r in records]
    counts = {state: 0 for state in ("pending", "generating", "success", "failed")}
    for storyboard in storyboards:
        counts[storyboard["status"]] += 1
    attempted = len(storyboards) - counts["pending"]
    finished = counts["success"] + counts["failed"]
    return {
        "project_id": str(project_id),
        # Stored by FINISH_PROJECT, and read in the storyboards' snapshot, so it agrees with
        # the counts beside it.
        "status": records[0]["project_status"] if records else project["status"],
        "total": len(storyboards),
        "pending": counts["pending"],
        "generating": counts["generating"],
        "succeeded": counts["success"],
        "failed": counts["failed"],
        "percent": finished * 100 // attempted if attempted else 0,
        # Only once generation was asked for: a project never generated is not done.
        "done": attempted > 0 and counts["generating"] == 0,
        "storyboards": storyboards,
        "eta_s": _eta_s(records, waits, attempted=attempted),
        # Each storyboard's current job: a shot regenerated since has its earlier jobs'
        # charges left out (the storyboard keeps no link to them).
        "spent": _spent(records, waits),
    }


def _spent(records: Sequence[Mapping[str, Any]], waits: Mapping[int, reports.Wait]) -> float:
    """What the storyboards' current jobs were charged. A shot stored by a job not yet
    completed counts its attempt's charge already: the handler marks the shot `success`
    before pgqueue completes the job and records the charge, and a status read in between
    (the event stream's `done`, sent as the last shot is stored) would otherwise say one
    image less than the same read a moment later."""
    total = Decimal(0)
    for record in records:
        wait = waits.get(record["job_id"])
        if wait is None:
            continue
        total += wait.spent or 0
        if record["status"] == "success" and wait.charging is not None:
            total += wait.charging
    return float(total)


def _wait_json(record: Mapping[str, Any], wait: reports.Wait | None) -> dict[str, Any]:
    """A storyboard's `wait_reason` and `next_attempt_at`: only a generating shot whose job
    is queued waits; a call in flight, a finished shot or one never asked for does not."""
    if record["status"] != "generating" or wait is None or wait.reason is None:
        return {"wait_reason": None, "next_attempt_at": None}
    moment = wait.next_attempt_at
    return {
        "wait_reason": wait.reason.value,
        "next_attempt_at": None if moment is None else _iso(moment),
    }


def _eta_s(
    records: Sequence[Mapping[str, Any]], waits: Mapping[int, reports.Wait], *, attempted: int
) -> int | None:
    """Estimated seconds until the project is done: 0 once it is (after a generation), else
    the latest of its generating shots' `done_in_s` (pgqueue's estimate: the shot's place in
    its queue's line over the queue's throughput of the last minutes, slowed to the share of
    the running slots the project's concurrency limit allows), rounded up to a second; None
    when any of them has none (nothing finished lately, a paused queue) or nothing was asked.
    """
    generating = [r for r in records if r["status"] == "generating"]
    if not generating:
        return 0 if attempted else None
    latest = 0.0
    for record in generating:
        wait = waits.get(record["job_id"])
        if wait is None or wait.done_in_s is None:
            return None
        latest = max(latest, wait.done_in_s)
    return math.ceil(latest)


async def _own_project(
    conn: asyncpg.Connection,
    queue: Queue,
    user: User,
    project_id: uuid.UUID,
    settings: ServiceSettings,
) -> asyncpg.Record:
    """The user's project, after `reconcile`; 404 for anyone else's.

    Ownership is checked before the repair: another user's read must not write the owner's
    rows (it would also tell them, by timing, that the project exists).
    """
    project: asyncpg.Record | None = await conn.fetchrow(queries.GET_PROJECT, project_id, user.name)
    if project is None:
        raise not_found("project")
    if await reconcile(conn, queue, project_id, settings.storyboard_timeout_s):
        project = await conn.fetchrow(queries.GET_PROJECT, project_id, user.name)  # re-read
        if project is None:
            raise not_found("project")
    return project


def storyboard_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A storyboard as the API answers it."""
    progress = record["job_progress"]
    return {
        "shot_number": record["shot_number"],
        "status": record["status"],
        "image_url": record["image_url"],
        "error": record["error"],
        "attempts": record["attempts"],
        "job_id": record["job_id"],
        "progress": json.loads(progress) if isinstance(progress, str) else progress,
    }


def _project_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(record["id"]),
        "title": record["title"],
        "style": record["style"],
        "aspect_ratio": record["aspect_ratio"],
        "status": record["status"],
        "generation": record["generation"],
        "created_at": _iso(record["created_at"]),
        "updated_at": _iso(record["updated_at"]),
    }


async def _project_json(conn: asyncpg.Connection, project: Mapping[str, Any]) -> dict[str, Any]:
    project_id = project["id"]
    characters = await conn.fetch(queries.SELECT_CHARACTERS, project_id)
    shots = await conn.fetch(queries.SELECT_SHOTS, project_id)
    storyboards = await conn.fetch(queries.SELECT_STORYBOARDS, project_id)
    return {
        **_project_summary(project),
        "characters": [dict(c) for c in characters],
        "shots": [{**dict(s), "characters": list(s["characters"])} for s in shots],
        "storyboards": [storyboard_json(s) for s in storyboards],
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()
