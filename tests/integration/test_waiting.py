"""Queue.explain_waits: why a queued job has not started, when its next attempt may, and when
it may be done; each reason set up as the claim would meet it, and their precedence."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from pgqueue import JobSpec, Queue, store
from pgqueue.models import JobState
from pgqueue.reports import Wait, WaitReason

KEY = "upstream"


def _claim(limit: int = 10, queues: tuple[str, ...] = ("default",)) -> store.ClaimRequest:
    return store.ClaimRequest(list(queues), ["k"], limit, "w", 60.0)


async def _explain(queue: Queue, job_id: int) -> Wait:
    return (await queue.explain_waits([job_id]))[job_id]


async def _now(pool: asyncpg.Pool) -> datetime:
    now: datetime = await pool.fetchval("SELECT now()")
    return now


async def _open_breaker(pool: asyncpg.Pool, until_s: float) -> datetime:
    # The lead's API for the breaker is to come; the row is what the claim reads.
    until: datetime = await pool.fetchval(
        "INSERT INTO pgqueue.rate_limits (key, breaker_state, breaker_until)"
        " VALUES ($1, 'open', now() + make_interval(secs => $2))"
        " ON CONFLICT (key) DO UPDATE SET breaker_state = 'open',"
        " breaker_until = EXCLUDED.breaker_until RETURNING breaker_until",
        KEY,
        until_s,
    )
    return until


async def _set_budget(pool: asyncpg.Pool, key: str, amount: str, spent: str) -> datetime:
    """A budget of `amount` per day with `spent` already charged today; returns its window's
    end."""
    end: datetime = await pool.fetchval(
        "INSERT INTO pgqueue.budgets (key, amount, period_s, window_start, spent)"
        " VALUES ($1, $2::numeric, 86400, pgqueue.budget_window(86400, now()), $3::numeric)"
        " RETURNING window_start + interval '1 day'",
        key,
        amount,
        spent,
    )
    return end


async def _cost(pool: asyncpg.Pool, job_id: int, cost: str, keys: list[str]) -> None:
    # Queue.enqueue takes no cost yet: write the columns the claim reads.
    await pool.execute(
        "UPDATE pgqueue.jobs SET cost = $2::numeric, budget_keys = $3 WHERE id = $1",
        job_id,
        cost,
        keys,
    )


async def test_a_runnable_job_is_queued_and_unknown_ids_are_left_out(queue: Queue) -> None:
    job = await queue.enqueue("k")
    waits = await queue.explain_waits([job.id, 999_999])
    assert list(waits) == [job.id]
    wait = waits[job.id]
    assert wait.state is JobState.QUEUED and wait.reason is WaitReason.QUEUED
    assert wait.next_attempt_at is None and wait.spent is None
    assert wait.done_in_s is None  # nothing finished lately: no rate to go by
    assert await queue.explain_waits([]) == {}


async def test_running_and_finished_jobs_have_no_reason(queue: Queue, pool: asyncpg.Pool) -> None:
    first, second = await queue.enqueue_many([JobSpec("k"), JobSpec("k")])
    (running,) = await store.claim(pool, _claim(1))
    assert running.id == first.id
    await queue.cancel(second.id)
    waits = await queue.explain_waits([first.id, second.id])
    assert waits[first.id].state is JobState.RUNNING and waits[first.id].reason is None
    assert waits[first.id].next_attempt_at is None
    assert waits[second.id].state is JobState.CANCELLED and waits[second.id].reason is None
    assert waits[second.id].done_in_s == 0


async def test_a_paused_queue_comes_first(queue: Queue) -> None:
    job = await queue.enqueue(
        "k", delay=timedelta(minutes=5), concurrency_key="c", concurrency_limit=1
    )
    await queue.pause("default")
    wait = await _explain(queue, job.id)
    assert wait.reason is WaitReason.QUEUE_PAUSED and wait.next_attempt_at is None
    await queue.resume("default")
    assert (await _explain(queue, job.id)).reason is WaitReason.QUEUED


async def test_a_failed_attempt_waits_for_its_retry(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue("k", rate_limit_key=KEY)
    (job,) = await store.claim(pool, _claim())
    assert job.lease_token is not None
    failed = await store.fail_attempt(
        pool,
        job.id,
        job.lease_token,
        retryable=True,
        delay_s=30,
        error="boom",
        progress_json=None,
    )
    assert failed is not None and failed.state is JobState.QUEUED
    await _open_breaker(pool, 600)  # the retry's backoff is named first
    wait = await _explain(queue, job.id)
    assert wait.reason is WaitReason.RETRY_SCHEDULED
    assert wait.next_attempt_at == failed.run_at


async def test_a_delayed_job_is_queued_until_its_run_at(queue: Queue) -> None:
    job = await queue.enqueue("k", delay=timedelta(minutes=10))
    wait = await _explain(queue, job.id)
    assert wait.reason is WaitReason.QUEUED and wait.next_attempt_at == job.run_at


async def test_an_open_breaker_holds_its_keys_jobs(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_rate_limit(KEY, 1, 60)
    probe, held = await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(2)])
    await store.claim(pool, _claim(1))  # the window is full too: the breaker is named first
    until = await _open_breaker(pool, 120)
    other = await queue.enqueue("k", rate_limit_key="another")
    waits = await queue.explain_waits([probe.id, held.id, other.id])
    assert waits[probe.id].state is JobState.RUNNING and waits[probe.id].reason is None
    assert waits[held.id].reason is WaitReason.UPSTREAM_DOWN
    assert waits[held.id].next_attempt_at == until
    assert waits[other.id].reason is WaitReason.QUEUED
    # Half open: the probe runs, the others wait for its verdict.
    await pool.execute(
        "UPDATE pgqueue.rate_limits SET breaker_state = 'half_open' WHERE key = $1", KEY
    )
    assert (await _explain(queue, held.id)).reason is WaitReason.UPSTREAM_DOWN


async def test_a_full_window_or_a_throttle_is_a_rate_limit(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.set_rate_limit(KEY, 1, 60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(2)])
    (started,) = await store.claim(pool, _claim())
    assert started.started_at is not None
    assert await store.claim(pool, _claim()) == []  # the window is full
    queued_id = await pool.fetchval("SELECT id FROM pgqueue.jobs WHERE state = 'queued'")
    wait = await _explain(queue, queued_id)
    assert wait.reason is WaitReason.RATE_LIMIT
    # From the start as the key recorded it, after the claim's locks: a moment after the
    # job's started_at (its claim statement's now()).
    late = wait.next_attempt_at - (started.started_at + timedelta(seconds=60))
    assert timedelta(0) <= late < timedelta(seconds=1)
    # A throttle further out than the window is the later of the two.
    paused_until = await pool.fetchval(
        "UPDATE pgqueue.rate_limits SET paused_until = now() + interval '5 minutes'"
        " WHERE key = $1 RETURNING paused_until",
        KEY,
    )
    assert (await _explain(queue, queued_id)).next_attempt_at == paused_until


async def test_a_cost_that_does_not_fit_is_over_budget(queue: Queue, pool: asyncpg.Pool) -> None:
    fits, too_dear, unbudgeted = await queue.enqueue_many(
        [JobSpec("k", concurrency_key="c", concurrency_limit=5) for _ in range(3)]
    )
    window_end = await _set_budget(pool, "daily", amount="10", spent="7")
    await _set_budget(pool, "roomy", amount="1000", spent="0")
    await _cost(pool, fits.id, "3", ["daily", "roomy"])
    await _cost(pool, too_dear.id, "3.5", ["roomy", "daily"])
    await _cost(pool, unbudgeted.id, "3.5", ["no such budget"])
    waits = await queue.explain_waits([fits.id, too_dear.id, unbudgeted.id])
    assert waits[fits.id].reason is WaitReason.QUEUED
    assert waits[too_dear.id].reason is WaitReason.OVER_BUDGET
    assert waits[too_dear.id].next_attempt_at == window_end
    assert waits[unbudgeted.id].reason is WaitReason.QUEUED
    # What running attempts hold counts; what an older window spent does not.
    await pool.execute("UPDATE pgqueue.budgets SET reserved = 1 WHERE key = 'daily'")
    assert (await _explain(queue, fits.id)).reason is WaitReason.OVER_BUDGET
    await pool.execute(
        "UPDATE pgqueue.budgets SET reserved = 0, window_start = window_start - interval '1 day'"
        " WHERE key = 'daily'"
    )
    assert (await _explain(queue, too_dear.id)).reason is WaitReason.QUEUED


async def test_a_key_at_its_limit_waits_for_a_slot(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many(
        [JobSpec("k", concurrency_key="project", concurrency_limit=2) for _ in range(3)]
    )
    claimed = await store.claim(pool, _claim())
    assert len(claimed) == 2
    queued_id = await pool.fetchval("SELECT id FROM pgqueue.jobs WHERE state = 'queued'")
    wait = await _explain(queue, queued_id)
    assert wait.reason is WaitReason.CONCURRENCY and wait.next_attempt_at is None


async def test_spent_is_what_the_attempts_were_charged(queue: Queue, pool: asyncpg.Pool) -> None:
    job = await queue.enqueue("k")
    await _cost(pool, job.id, "2.5", ["daily"])
    await _set_budget(pool, "daily", amount="100", spent="0")
    (claimed,) = await store.claim(pool, _claim())
    assert claimed.lease_token is not None
    await store.complete(pool, [store.Success(claimed.id, claimed.lease_token, "null")])
    wait = await _explain(queue, job.id)
    assert wait.state is JobState.SUCCEEDED and wait.spent == Decimal("2.5")
    assert wait.charging is None


async def test_charging_is_what_the_running_attempt_will_be_charged(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue("k")
    await _cost(pool, job.id, "2.5", ["daily"])
    await _set_budget(pool, "daily", amount="100", spent="0")
    assert (await _explain(queue, job.id)).charging is None  # queued: no attempt runs
    assert len(await store.claim(pool, _claim())) == 1
    wait = await _explain(queue, job.id)
    assert wait.charging == Decimal("2.5") and wait.spent is None
    await pool.execute("UPDATE pgqueue.jobs SET attempt_cost = 1 WHERE id = $1", job.id)
    assert (await _explain(queue, job.id)).charging == Decimal("1")  # what ctx.charge said


@pytest.mark.parametrize("busy", [0, 2])
async def test_done_in_s_is_the_line_over_the_measured_rate(
    queue: Queue, pool: asyncpg.Pool, busy: int
) -> None:
    # 30 jobs finished in the last minutes, counted as the counters date them: a rate of
    # 30 / (seconds since the start of the earliest such minute).
    await pool.execute(
        "INSERT INTO pgqueue.finished_counts (queue, state, minute, n)"
        " VALUES ('default', 'succeeded', date_trunc('minute', now()) - interval '2 minutes', 30)"
    )
    await queue.enqueue_many([JobSpec("k") for _ in range(busy)])
    await store.claim(pool, _claim(busy or 1))
    jobs = await queue.enqueue_many([JobSpec("k") for _ in range(4)])
    async with pool.acquire() as conn, conn.transaction():
        seconds = await conn.fetchval(
            "SELECT extract(epoch FROM now() - (date_trunc('minute', now())"
            " - interval '2 minutes'))::float8"
        )
        waits = await queue.explain_waits([j.id for j in jobs], conn=conn)
    rate = 30 / seconds
    for place, job in enumerate(jobs, start=1):
        done_in_s = waits[job.id].done_in_s
        assert done_in_s == pytest.approx((busy + place) / rate)
    # A queue nobody serves: no estimate.
    await queue.pause("default")
    assert (await _explain(queue, jobs[0].id)).done_in_s is None


async def test_a_concurrency_key_gets_its_share_of_the_rate(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await pool.execute(
        "INSERT INTO pgqueue.finished_counts (queue, state, minute, n)"
        " VALUES ('default', 'succeeded', date_trunc('minute', now()) - interval '1 minute', 60)"
    )
    # Four others run; the key may run one at a time: a quarter of the throughput.
    await queue.enqueue_many([JobSpec("k") for _ in range(4)])
    await store.claim(pool, _claim(4))
    keyed = await queue.enqueue_many(
        [JobSpec("k", concurrency_key="p", concurrency_limit=1) for _ in range(3)]
    )
    async with pool.acquire() as conn, conn.transaction():
        seconds = await conn.fetchval(
            "SELECT extract(epoch FROM now() - (date_trunc('minute', now())"
            " - interval '1 minute'))::float8"
        )
        waits = await queue.explain_waits([j.id for j in keyed], conn=conn)
    rate = 60 / seconds
    assert waits[keyed[-1].id].done_in_s == pytest.approx(3 / (rate / 4))
    assert waits[keyed[0].id].done_in_s == pytest.approx(max(5 / rate, 1 / (rate / 4)))


async def test_a_job_further_back_than_the_read_has_no_estimate(
    queue: Queue, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await pool.execute(
        "INSERT INTO pgqueue.finished_counts (queue, state, minute, n)"
        " VALUES ('default', 'succeeded', date_trunc('minute', now()), 10)"
    )
    monkeypatch.setattr("pgqueue.store.waiting.LINE_READ_LIMIT", 3)
    jobs = await queue.enqueue_many([JobSpec("k") for _ in range(4)])
    waits = await queue.explain_waits([j.id for j in jobs])
    assert [waits[j.id].done_in_s is None for j in jobs] == [False, False, False, True]
    assert waits[jobs[-1].id].reason is WaitReason.QUEUED  # the reason does not need the line
