"""The dashboard's statements on a real Postgres: bulk retry and cancel by filter (each one
statement, stopping at the newest job counted), the bounded payload search, the states a page
polls and the per-kind run time percentiles."""

from __future__ import annotations

import json

import asyncpg
import pytest

from pgqueue import JobState, Queue, queries, reports, store

LEASE_S = 30.0


async def _fail(pool: asyncpg.Pool, job_id: int, error: str = "boom") -> None:
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now(), last_error = $2"
        " WHERE id = $1",
        job_id,
        error,
    )


async def _states(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT id, state::text FROM pgqueue.jobs")
    return {r["id"]: r["state"] for r in rows}


async def test_bulk_retry_takes_the_filter_and_stops_at_the_newest_job_counted(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    ann = [await queue.enqueue("render", {"user": "ann", "n": n}) for n in range(3)]
    bob = await queue.enqueue("render", {"user": "bob"})
    other_kind = await queue.enqueue("mail", {"user": "ann"})
    other_queue = await queue.enqueue("render", {"user": "ann"}, queue="slow")
    for job in [*ann, bob, other_kind, other_queue]:
        await _fail(pool, job.id)
    cancelled = await queue.enqueue("render", {"user": "ann", "n": 9})
    await queue.cancel(cancelled.id)

    found = reports.JobFilter(queue="default", kind="render", payload={"user": "ann"})
    count, newest = await store.count_retryable(pool, found)
    assert (count, newest) == (4, cancelled.id)  # 3 failed and 1 cancelled of ann's renders

    # A job of the filter that failed after the count is left alone: the count was shown.
    late = await queue.enqueue("render", {"user": "ann"})
    await _fail(pool, late.id)
    assert newest is not None
    assert await store.retry_matching(pool, found, newest) == 4
    states = await _states(pool)
    assert [states[j.id] for j in ann] == ["queued"] * 3 and states[cancelled.id] == "queued"
    for left in (bob, other_kind, other_queue, late):
        assert states[left.id] == "failed", left
    again = await queue.get(ann[0].id)
    assert again is not None and again.attempts == 0 and again.finished_at is None

    # The state filter narrows it: only failed ones (the late one), never a queued one.
    only_failed = reports.JobFilter(state=JobState.FAILED, payload={"user": "ann"})
    assert await store.count_retryable(pool, only_failed) == (3, late.id)
    queued = reports.JobFilter(state=JobState.QUEUED)
    assert await store.count_retryable(pool, queued) == (0, None)


async def test_bulk_cancel_cancels_queued_jobs_at_once_and_asks_running_ones_to_stop(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    waiting = [await queue.enqueue("render", {"project": "p1"}) for _ in range(3)]
    (running,) = await store.claim(
        pool, store.ClaimRequest(["default"], ["render"], 1, "w-1", LEASE_S)
    )
    elsewhere = await queue.enqueue("render", {"project": "p2"})
    done = await queue.enqueue("render", {"project": "p1"})
    await _fail(pool, done.id)

    found = reports.JobFilter(payload={"project": "p1"})
    count, newest = await store.count_cancellable(pool, found)
    assert count == 3 and newest == waiting[-1].id  # 2 queued + the running one (oldest)
    assert newest is not None
    assert await store.cancel_matching(pool, found, newest) == (2, 1)
    states = await _states(pool)
    assert running.id == waiting[0].id and states[running.id] == "running"
    assert [states[j.id] for j in waiting[1:]] == ["cancelled", "cancelled"]
    assert states[elsewhere.id] == "queued" and states[done.id] == "failed"
    flagged = await queue.get(running.id)
    assert flagged is not None and flagged.cancel_requested_at is not None
    # Asked once: a second count finds nothing left to cancel.
    assert await store.count_cancellable(pool, found) == (0, None)


@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
async def test_the_bulk_statements_read_their_states_through_partial_indexes(
    pool: asyncpg.Pool, plan_mode: str
) -> None:
    # Many succeeded jobs: a statement that read the finished history would scan them all.
    await pool.execute(
        "INSERT INTO pgqueue.jobs (queue, kind, payload, state, finished_at)"
        " SELECT 'default', 'k', jsonb_build_object('n', n), 'succeeded', now()"
        " FROM generate_series(1, 20000) AS n"
    )
    await pool.execute("ANALYZE pgqueue.jobs")
    retryable, cancellable = ["failed", "cancelled"], ["queued", "running"]
    cases = (
        (queries.COUNT_RETRYABLE, retryable, ()),
        (queries.RETRY_MATCHING, retryable, (10**6,)),
        (queries.COUNT_CANCELLABLE, cancellable, ()),
        (queries.CANCEL_MATCHING, cancellable, (10**6,)),
    )
    async with pool.acquire() as conn:
        await conn.execute(f"SET plan_cache_mode = {plan_mode}")
        for statement, states, extra in cases:
            rows = await conn.fetch(f"EXPLAIN {statement}", None, states, None, '{"n": 5}', *extra)
            plan = "\n".join(r[0] for r in rows)
            assert "Seq Scan on jobs" not in plan, plan
        await conn.execute("RESET plan_cache_mode")


async def test_a_payload_search_reads_one_window_of_ids_per_page(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    match = await queue.enqueue("render", {"user": "ann", "tags": ["a", "b"]})
    for n in range(30):
        await queue.enqueue("render", {"user": "bob", "n": n})
    found = reports.JobFilter(payload={"tags": ["b"]})  # containment reaches into arrays

    # Windows of 10 ids from the newest down (ids 1-31: four of them), the match in the last.
    pages: list[list[int]] = []
    before = None
    while True:
        jobs, floor = await store.list_jobs_containing(pool, found, before=before, window=10)
        pages.append([j.id for j in jobs])
        if floor is None:
            break
        assert before is None or floor < before
        before = floor
    assert pages == [[], [], [], [match.id]]
    jobs, _ = await store.list_jobs_containing(pool, found)  # the default window holds all
    assert [j.id for j in jobs] == [match.id]
    with pytest.raises(ValueError, match="payload"):
        await store.list_jobs_containing(pool, reports.JobFilter(kind="render"))


async def test_job_states_and_kind_durations(queue: Queue, pool: asyncpg.Pool) -> None:
    jobs = [await queue.enqueue("render", {"n": n}) for n in range(100)]
    slow = await queue.enqueue("mail", {})
    # Run times of 1..100 ms for the renders, 5 s for the mail, all succeeded a moment ago.
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'succeeded', attempts = 1,"
        " started_at = now() - make_interval(secs => (payload ->> 'n')::int / 1000.0 + 0.001),"
        " finished_at = now() WHERE kind = 'render'"
    )
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'succeeded', attempts = 1,"
        " started_at = now() - interval '5 s', finished_at = now() WHERE id = $1",
        slow.id,
    )
    failed = await queue.enqueue("render", {"n": 1})
    await _fail(pool, failed.id)  # a failure's run time is not a run time of the kind

    durations = {d.kind: d for d in await store.kind_durations(pool)}
    assert set(durations) == {"mail", "render"}
    render = durations["render"]
    assert render.jobs == 100
    assert render.p50_s == pytest.approx(0.0505, abs=0.002)
    assert render.p95_s == pytest.approx(0.095, abs=0.002)
    assert render.p99_s == pytest.approx(0.099, abs=0.002)
    assert render.max_s == pytest.approx(0.100, abs=0.002)
    assert durations["mail"].p99_s == pytest.approx(5.0, abs=0.01)
    # The window is the last hour's, at most the jobs that finished last.
    assert [d.kind for d in await store.kind_durations(pool, max_jobs=1)] in (["mail"], [])
    assert await store.kind_durations(pool, window_s=0.000001) == []

    states = await store.job_states(pool, [jobs[0].id, failed.id, 999_999])
    assert set(states) == {jobs[0].id, failed.id}
    assert states[failed.id]["state"] == "failed" and states[jobs[0].id]["attempts"] == 1


async def test_the_queue_overview_a_page_polls_is_never_costed_into_jit(
    pool: asyncpg.Pool,
) -> None:
    # A backlog and an empty paused_queues (never analyzed: the planner counts 1,200 rows):
    # the overview, read every 2 s, was costed at 500,000+ and JIT-compiled, 1.5 s a call.
    await pool.execute(
        "INSERT INTO pgqueue.jobs (queue, kind, payload)"
        " SELECT 'q' || (n % 3), 'k', '{}' FROM generate_series(1, 5000) AS n"
    )
    await pool.execute("ANALYZE pgqueue.jobs")
    plan = json.loads(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {queries.QUEUE_OVERVIEW}"))
    jit_above_cost = float(await pool.fetchval("SHOW jit_above_cost"))
    assert plan[0]["Plan"]["Total Cost"] < jit_above_cost
    overview = {info.queue: info for info in await Queue(pool).queues()}
    assert {q: i.stats.waiting for q, i in overview.items()} == {"q0": 1666, "q1": 1667, "q2": 1667}
    assert all(
        i.oldest_waiting_s is not None and i.finished_last_5m == 0 for i in overview.values()
    )
