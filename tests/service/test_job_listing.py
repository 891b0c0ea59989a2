"""`GET /api/jobs` for a user reads the user's own jobs through an index, every project of
theirs; the dashboard's kind filter reads an index too. The plans are checked with EXPLAIN on
tables of a realistic size (timings belong to benchmarks, not here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from pgqueue import queries as pgqueue_queries
from service import queries
from service.payloads import JOB_KIND

MakeUser = Callable[..., Awaitable[dict[str, str]]]
FINISHED_JOBS = 30_000  # of other users and another kind: a scan would be the planner's loss
PROJECTS = 501  # one past the 500 newest projects the listing used to read

# Projects of `$1`, the oldest first; `$2` of them.
_PROJECTS = """
INSERT INTO storyboard.projects (owner, title, style, aspect_ratio, created_at)
SELECT $1, 'p' || n, '', '16:9', now() - make_interval(mins => $2 - n)
FROM generate_series(1, $2) AS n
RETURNING id
"""
# Finished storyboard jobs of `$2` projects of other users, `$1` in all.
_OTHERS_JOBS = """
INSERT INTO pgqueue.jobs (kind, payload, state, finished_at)
SELECT 'storyboard.generate',
       jsonb_build_object('project_id', gen_random_uuid()::text, 'shot_number', 1,
                          'generation', 1),
       'succeeded', now()
FROM generate_series(1, $1)
"""


async def _job_of(pool: asyncpg.Pool, project_id: str, state: str = "succeeded") -> int:
    finished = "now()" if state != "queued" else "NULL"
    job_id: int = await pool.fetchval(
        "INSERT INTO pgqueue.jobs (kind, payload, state, finished_at)"
        f" VALUES ($1, jsonb_build_object('project_id', $2::text, 'shot_number', 1,"
        f" 'generation', 1), $3::pgqueue.job_state, {finished}) RETURNING id",
        JOB_KIND,
        project_id,
        state,
    )
    return job_id


async def test_a_user_lists_the_jobs_of_every_project_of_theirs(
    client: httpx.AsyncClient, user: MakeUser, pool: asyncpg.Pool
) -> None:
    alice = await user("alice")
    projects = [str(r["id"]) for r in await pool.fetch(_PROJECTS, "alice", PROJECTS)]
    # The oldest project's job first: the newest 500 projects leave that project out.
    oldest = await _job_of(pool, projects[0])
    newest = await _job_of(pool, projects[-1])
    bobs = await _job_of(pool, str((await pool.fetch(_PROJECTS, "bob", 1))[0]["id"]))

    listed = await client.get("/api/jobs", headers=alice)
    assert listed.status_code == 200, listed.text
    assert [j["id"] for j in listed.json()["jobs"]] == [newest, oldest]
    one = await client.get("/api/jobs", params={"limit": "1"}, headers=alice)
    assert [j["id"] for j in one.json()["jobs"]] == [newest] and one.json()["next"] == newest
    rest = await client.get("/api/jobs", params={"before": str(newest)}, headers=alice)
    assert [j["id"] for j in rest.json()["jobs"]] == [oldest]
    assert bobs not in [j["id"] for j in listed.json()["jobs"]]
    failed = await client.get("/api/jobs", params={"state": "failed"}, headers=alice)
    assert failed.json()["jobs"] == []


async def _plan(conn: asyncpg.Connection, statement: str, *args: object) -> str:
    rows = await conn.fetch("EXPLAIN " + statement, *args)
    return "\n".join(r[0] for r in rows)


async def test_the_listing_the_cap_and_the_kind_filter_use_their_indexes(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO pgqueue.jobs (kind, state, finished_at)"
            " SELECT 'mail.send', 'succeeded', now() FROM generate_series(1, $1)",
            FINISHED_JOBS,
        )
        # A kind of few jobs, all older than the rest: a newest-first scan of every job would
        # read the whole table to find them.
        await conn.execute(
            "INSERT INTO pgqueue.jobs (kind) SELECT 'report.build' FROM generate_series(1, 10)"
        )
        await conn.execute(_OTHERS_JOBS, FINISHED_JOBS)
        projects = [str(r["id"]) for r in await conn.fetch(_PROJECTS, "alice", 20)]
        for project_id in projects:
            await _job_of(pool, project_id)
            await _job_of(pool, project_id, "queued")
        await conn.execute("ANALYZE")
        # Both ways the API's pool may plan them: a custom plan (a statement's first runs)
        # and the generic one a prepared statement may settle on.
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            listing = await _plan(
                conn, queries.LIST_USER_JOB_IDS, "alice", 2**63 - 1, None, None, 50
            )
            assert "storyboard_jobs_project_idx" in listing, (mode, listing)
            assert "Seq Scan on jobs" not in listing, (mode, listing)
            cap = await _plan(conn, queries.COUNT_USER_PENDING, "alice")
            assert "storyboard_live_jobs_project_idx" in cap, (mode, cap)
            assert "Seq Scan on jobs" not in cap, (mode, cap)
            # $1 before, $2 queue, $3 state, $4 kind, $5/$6 payload match, $7 limit.
            by_kind = await _plan(
                conn, pgqueue_queries.LIST_JOBS_OF_KIND, 2**63 - 1, None, None, "report.build",
                None, [], 50,
            )  # fmt: skip
            assert "jobs_kind_idx" in by_kind, (mode, by_kind)
            assert "Seq Scan on jobs" not in by_kind, (mode, by_kind)
        # The counts the plans serve are right.
        assert await conn.fetchval(queries.COUNT_USER_PENDING, "alice") == 20
        listed = await conn.fetch(queries.LIST_USER_JOB_IDS, "alice", 2**63 - 1, None, None, 50)
        assert len(listed) == 40
        reports = await conn.fetch(
            pgqueue_queries.LIST_JOBS_OF_KIND, 2**63 - 1, None, None, "report.build", None, [], 50
        )
        assert len(reports) == 10
