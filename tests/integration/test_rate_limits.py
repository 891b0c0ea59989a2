"""Rate limits, decided inside the claim: never more starts of a key than its limit in any
window, across racing claimers and workers; throttles pause a key fleet-wide and give the
attempt back; held-back jobs wait `queued` and start as soon as the key allows, not at a poll."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime

import asyncpg
import pytest

from pgqueue import (
    JobContext,
    JobSpec,
    JobState,
    Queue,
    RateLimit,
    Registry,
    RetryLater,
    Worker,
    WorkerConfig,
    store,
)
from tests.integration.conftest import WorkerFactory
from tests.support.settings import WORKER_OPTIONS as FAST
from tests.support.upstream import most_in_window
from tests.support.wait import wait_for

KINDS = ["k"]
KEY = "upstream"
WRITE_GRACE_S = 0.1  # seconds from a handler's raise to its throttle's commit, at most


def _claim(limit: int, worker: str = "w") -> store.ClaimRequest:
    return store.ClaimRequest(["default"], KINDS, limit, worker, 60.0)


def test_the_window_count_helper() -> None:
    assert most_in_window([0.0, 0.5, 1.0, 1.5], 1.0) == 2
    assert most_in_window([0.0, 0.0, 0.0, 0.99], 1.0) == 4
    assert most_in_window([], 1.0) == 0


async def _started_at(pool: asyncpg.Pool) -> list[float]:
    rows = await pool.fetch(
        "SELECT extract(epoch FROM started_at)::float8 AS at FROM pgqueue.jobs"
        " WHERE started_at IS NOT NULL"
    )
    return [r["at"] for r in rows]


async def _states(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT state::text, count(*) AS n FROM pgqueue.jobs GROUP BY 1")
    return {r["state"]: r["n"] for r in rows}


async def test_a_claim_takes_no_more_than_the_key_allows(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_rate_limit(KEY, 3, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(10)])
    await queue.enqueue_many([JobSpec("k", priority=1) for _ in range(2)])
    claimed = await store.claim(pool, _claim(20))
    # Three of the key (the rest wait queued, never claimed and released) and both others.
    assert sorted(j.rate_limit_key or "-" for j in claimed) == ["-", "-", KEY, KEY, KEY]
    assert await store.claim(pool, _claim(20)) == []
    assert await _states(pool) == {"running": 5, "queued": 7}
    (limit,) = await queue.rate_limits()
    assert limit["capacity"] == 3 and limit["recent_starts"] == 3
    assert limit["blocked_until"] is not None
    # The worker's next-due lookup knows when the key frees a start.
    due_s = await store.seconds_until_due(pool, ["default"], KINDS)
    assert due_s is not None and 59 < due_s <= 60


async def test_a_key_that_opened_since_the_last_claim_is_due_now(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # A claim found the key closed; it opened before the worker's next-due lookup ran. Asked
    # with the time since that claim began, the lookup says "now", not "nothing waits" (which
    # left the worker asleep until its poll).
    await queue.set_rate_limit(KEY, 1, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(2)])
    assert len(await store.claim(pool, _claim(2))) == 1
    await pool.execute("UPDATE pgqueue.rate_limits SET next_start_at = now() - interval '200 ms'")
    assert await store.seconds_until_due(pool, ["default"], KINDS) is None
    due_s = await store.seconds_until_due(pool, ["default"], KINDS, since_claim_s=0.5)
    assert due_s is not None and -0.5 < due_s <= 0
    due_s = await store.seconds_until_key_allows(pool, ["default"], KINDS, since_claim_s=0.5)
    assert due_s is not None and -0.5 < due_s <= 0
    # Opened before the claim began: the claim saw it open, nothing to wake for.
    assert await store.seconds_until_due(pool, ["default"], KINDS, since_claim_s=0.1) is None


async def test_the_next_due_lookup_does_not_read_a_key_a_claim_still_holds(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # Another worker's claim locked the key and a job this worker's claim skipped; until it
    # commits, the key looks open to a plain read (nothing to wake for), and once it commits
    # its start closed the key. The lookup does not read the locked key: it says "now", and
    # the next claim waits for that lock; once it is gone the lookup reads the key as the
    # other claim left it. This worker wakes when the key allows its next start, not at its
    # poll.
    await queue.set_rate_limit(KEY, 1, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(2)])
    # The key opened a minute ago: open since long before this worker's claim began.
    await pool.execute("UPDATE pgqueue.rate_limits SET next_start_at = now() - interval '1 min'")
    assert await store.seconds_until_due(pool, ["default"], KINDS, 0.5) is None
    async with pool.acquire() as other, other.transaction():
        await other.execute(
            "SELECT 1 FROM pgqueue.rate_limits WHERE key = $1 FOR NO KEY UPDATE", KEY
        )
        assert await store.seconds_until_due(pool, ["default"], KINDS, 0.5) == 0.0
        assert await store.seconds_until_key_allows(pool, ["default"], KINDS, 0.5) == 0.0
        await other.execute(
            "UPDATE pgqueue.rate_limits SET next_start_at = now() + interval '30 s' WHERE key = $1",
            KEY,
        )
    for lookup in (store.seconds_until_due, store.seconds_until_key_allows):
        due_s = await lookup(pool, ["default"], KINDS, 0.5)
        assert due_s is not None and 29 < due_s <= 30


async def test_racing_claims_never_pass_the_limit(queue: Queue, pool: asyncpg.Pool) -> None:
    # Plain claims and fused complete-and-claims, on eight connections at once.
    await queue.set_rate_limit(KEY, 7, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(100)])
    await queue.enqueue_many([JobSpec("k", priority=-1) for _ in range(8)])
    seed = await store.claim(pool, _claim(8))  # the unkeyed ones, which rank first
    assert {j.rate_limit_key for j in seed} == {None}

    async def claimer(number: int) -> list[int]:
        taken: list[int] = []
        async with pool.acquire() as conn:
            for _ in range(5):
                if number < len(seed):
                    job = seed[number]
                    success = store.Success(job.id, job.lease_token or 0, "null")
                    _, jobs = await store.complete_and_claim(conn, [success], _claim(5))
                    number = len(seed)  # one completion each
                else:
                    jobs = await store.claim(conn, _claim(5, f"w{number}"))
                taken.extend(j.id for j in jobs if j.rate_limit_key == KEY)
        return taken

    results = await asyncio.gather(*(claimer(n) for n in range(8)))
    assert sum(len(r) for r in results) == 7
    assert await _states(pool) == {"succeeded": 8, "running": 7, "queued": 93}


async def test_the_limit_counts_starts_in_a_sliding_window(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # Three workers race for 12 jobs at 4 per second. The poll is far off (30 s): the jobs
    # can only finish in time if the workers wake when the key frees a start.
    await queue.set_rate_limit(KEY, 4, 1.0)
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        return None

    began = time.monotonic()
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(12)])
    async with (
        running_worker(registry, concurrency=5, poll_interval_s=30),
        running_worker(registry, concurrency=5, poll_interval_s=30),
        running_worker(registry, concurrency=5, poll_interval_s=30),
    ):

        async def all_done() -> bool:
            return (await _states(pool)).get("succeeded") == 12

        await wait_for(all_done, timeout=10, message="12 jobs at 4/s")
    elapsed = time.monotonic() - began
    starts = await _started_at(pool)
    assert most_in_window(starts, 1.0) == 4
    # Three windows: the last four start at 2 s; not a 30 s poll later.
    assert 2.0 <= max(starts) - min(starts) < 3.0
    assert elapsed < 6


async def test_a_throttle_pauses_the_key_everywhere_and_spends_no_attempt(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # The key has no limit: the throttle alone holds it. Job 0 meets a 429 twice; it has a
    # single attempt, which it would have spent at the first.
    registry = Registry()
    starts: list[float] = []
    throttled_at: list[float] = []

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        starts.append(time.monotonic())
        if ctx.payload["n"] == 0 and len(throttled_at) < 2:
            throttled_at.append(time.monotonic())
            raise RetryLater("429 Too Many Requests", throttle_s=1.0)

    first = await queue.enqueue("k", {"n": 0}, rate_limit_key=KEY, max_attempts=1)
    async with (
        running_worker(registry, concurrency=3),
        running_worker(registry, concurrency=3),
    ):
        await wait_for(lambda: len(throttled_at) == 1, message="the first 429")

        async def paused() -> bool:
            return any(limit["paused_until"] for limit in await queue.rate_limits())

        await wait_for(paused, message="the key's pause written")
        await queue.enqueue_many(
            [JobSpec("k", {"n": n}, rate_limit_key=KEY, max_attempts=1) for n in range(1, 7)]
        )

        async def all_done() -> bool:
            return (await _states(pool)).get("succeeded") == 7

        await wait_for(all_done, timeout=10, message="every job after the pauses")
    job = await queue.get(first.id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1
    # No job of the key started within a second of either 429, on either worker, once the
    # pause was written (WRITE_GRACE_S after the handler raised: jobs claimed before that
    # commit may still start, as calls in flight do).
    for moment in throttled_at:
        assert not [s for s in starts if moment + WRITE_GRACE_S < s < moment + 1.0]
    assert len(starts) == 9


async def test_a_throttle_without_a_key_is_a_plain_retry(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        raise RetryLater("busy", throttle_s=0.01)

    job = await queue.enqueue("k", max_attempts=1)
    async with running_worker(registry):

        async def failed() -> bool:
            current = await queue.get(job.id)
            return current is not None and current.state is JobState.FAILED

        await wait_for(failed, message="no key to pause: the attempt is spent")
    assert await queue.rate_limits() == []


async def test_a_paused_queue_stays_paused_and_takes_no_start(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.set_rate_limit(KEY, 2, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(3)])
    await queue.pause("default")
    assert await store.claim(pool, _claim(10)) == []
    assert (await queue.rate_limits())[0]["recent_starts"] == 0
    await queue.resume("default")
    assert len(await store.claim(pool, _claim(10))) == 2


async def test_a_lower_limit_counts_the_starts_already_made(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.set_rate_limit(KEY, 5, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(6)])
    assert len(await store.claim(pool, _claim(3))) == 3
    await queue.set_rate_limit(KEY, 2, 60)
    assert await store.claim(pool, _claim(10)) == []
    await queue.set_rate_limit(KEY, 4, 60)
    assert len(await store.claim(pool, _claim(10))) == 1
    await queue.remove_rate_limit(KEY)
    assert len(await store.claim(pool, _claim(10))) == 2


@pytest.mark.parametrize(
    ("key", "limit", "period_s"),
    [
        ("", 1, 1.0),
        ("x" * 201, 1, 1.0),
        (KEY, 0, 1.0),
        (KEY, 10_001, 1.0),
        (KEY, 1, 0.0),
        (KEY, 1, -1.0),
        (KEY, 1, math.nan),
        (KEY, 1, 86_401.0),
    ],
)
async def test_bad_limits_are_refused_and_change_nothing(
    queue: Queue, key: str, limit: int, period_s: float
) -> None:
    with pytest.raises(ValueError):
        await queue.set_rate_limit(key, limit, period_s)
    assert await queue.rate_limits() == []


@pytest.mark.parametrize("text", ["", "60", "60/", "/min", "60/day", "-1/s", "0/s", "1.5/s", "x/s"])
def test_bad_rate_limit_texts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"N/s, N/min or N/h|1-10000"):
        RateLimit.parse(text)


def test_rate_limit_texts() -> None:
    assert RateLimit.parse("60/min") == RateLimit(60, 60.0)
    assert RateLimit.parse(" 20/s ") == RateLimit(20, 1.0)
    assert RateLimit.parse("1000/h") == RateLimit(1000, 3600.0)
    assert str(RateLimit(60, 60.0)) == "60/min"


def test_bad_keys_and_throttles_are_refused() -> None:
    with pytest.raises(ValueError, match="rate-limit key"):
        JobSpec("k", rate_limit_key="")
    with pytest.raises(ValueError, match="throttle_s"):
        RetryLater("x", throttle_s=-1)
    with pytest.raises(ValueError, match="delay_s"):
        RetryLater("x")
    assert RetryLater("x", throttle_s=3).delay_s == 3.0


async def test_throttle_is_fenced_by_the_lease(queue: Queue, pool: asyncpg.Pool) -> None:
    job = await queue.enqueue("k", rate_limit_key=KEY)
    (claimed,) = await store.claim(pool, _claim(1))
    stale = (claimed.lease_token or 0) + 1
    args = {"pause_s": 5.0, "delay_s": 0.0, "error": "429", "progress_json": None}
    assert await store.throttle(pool, job.id, stale, KEY, **args) is None
    assert await queue.rate_limits() == []  # a refused write pauses nothing
    written = await store.throttle(pool, job.id, claimed.lease_token or 0, KEY, **args)
    assert written is not None and written.state is JobState.QUEUED and written.attempts == 0
    (limit,) = await queue.rate_limits()
    assert isinstance(limit["paused_until"], datetime) and limit["capacity"] is None
    assert await store.claim(pool, _claim(1)) == []


async def test_a_budgeted_burst_waits_for_the_key_and_a_plain_one_does_not(
    db_url: str, queue: Queue, pool: asyncpg.Pool
) -> None:
    # A drain (a burst with a budget) uses its budget on jobs the limit holds back; a plain
    # burst ends with them, as it ends with delayed jobs.
    await queue.set_rate_limit(KEY, 2, 1.0)
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        return None

    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(6)])
    plain = Worker(db_url, registry, WorkerConfig(**{**FAST, "burst": True}))
    await asyncio.wait_for(plain.run(), timeout=10)
    assert await _states(pool) == {"succeeded": 2, "queued": 4}
    budgeted = Worker(db_url, registry, WorkerConfig(**{**FAST, "burst": True, "max_seconds": 8}))
    began = time.monotonic()
    await asyncio.wait_for(budgeted.run(), timeout=15)
    assert await _states(pool) == {"succeeded": 6}
    assert time.monotonic() - began < 4  # two more windows, then nothing is held back


async def test_jobs_behind_a_key_that_ran_out_start_at_once(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    # A claim of 4 scans 4 jobs of the key, of which 2 may start: the unkeyed jobs behind them
    # must not wait for the key's next window (a minute), a completion or the poll (30 s).
    await queue.set_rate_limit(KEY, 2, 60)
    registry = Registry()
    release = asyncio.Event()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        if ctx.job.rate_limit_key is not None:
            await release.wait()  # no completion frees a slot meanwhile

    async with running_worker(registry, concurrency=4, poll_interval_s=30) as worker:
        await wait_for(worker.idle.is_set)  # one notification from here on, one claim
        await queue.enqueue_many(
            [JobSpec("k", rate_limit_key=KEY) for _ in range(6)]
            + [JobSpec("k", priority=1) for _ in range(2)]
        )

        async def others_done() -> bool:
            return (await _states(pool)).get("succeeded") == 2

        await wait_for(others_done, timeout=5, message="the 2 behind the key's 2 running")
        assert await _states(pool) == {"succeeded": 2, "running": 2, "queued": 4}
        release.set()


LOCK_HOLD_S = 3.0  # longer than the period below: the wait the start must not be dated before


async def test_a_claim_that_waited_for_the_keys_lock_counts_its_start_after_the_wait(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # A claim waits inside its statement while a transaction holds the key's row. Its start
    # used to be recorded at the statement's now(), before the wait: the window looked free
    # again right away, and a second claim started a job 2 ms after the first (1 per 2 s).
    await queue.set_rate_limit(KEY, 1, 2.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(3)])
    async with pool.acquire() as holder:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM pgqueue.rate_limits WHERE key = $1 FOR UPDATE", KEY)
            first = asyncio.create_task(store.claim(pool, _claim(1, "first")))

            async def waited_long_enough() -> bool:
                # The claim's backend waits on the row lock, for LOCK_HOLD_S so far. (Read
                # outside the holder's transaction, which would see one snapshot of it.)
                waited = await pool.fetchval(
                    "SELECT bool_or(clock_timestamp() - query_start"
                    "               >= make_interval(secs => $1))"
                    " FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%rate_limits%'",
                    LOCK_HOLD_S,
                )
                return bool(waited)

            await wait_for(waited_long_enough, timeout=LOCK_HOLD_S + 10)
            released_at: datetime = await holder.fetchval("SELECT clock_timestamp()")
        [started] = await asyncio.wait_for(first, timeout=10)
        # The second claimer comes right after the first: within the same 2 s, so nothing.
        assert await store.claim(pool, _claim(1, "second")) == []
    starts = await pool.fetchval("SELECT starts FROM pgqueue.rate_limits WHERE key = $1", KEY)
    assert started.rate_limit_key == KEY
    assert len(starts) == 1 and starts[0] >= released_at
    assert await _states(pool) == {"running": 1, "queued": 2}
