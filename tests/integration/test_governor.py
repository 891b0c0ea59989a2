"""The governor, decided in Postgres: fair turns between keys, budgets reserved in the claim and
settled when an attempt ends, a circuit breaker per rate-limit key, an adaptive rate."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from pgqueue import (
    Breaker,
    Job,
    JobContext,
    JobSpec,
    JobState,
    Queue,
    Registry,
    RetryLater,
    UpstreamDown,
    retry,
    store,
)
from tests.integration.conftest import WorkerFactory
from tests.support.wait import wait_for

KINDS = ["k"]
KEY = "upstream"


def _claim(limit: int, worker: str = "w") -> store.ClaimRequest:
    return store.ClaimRequest(["default"], KINDS, limit, worker, 60.0)


async def _answered_429(pool: asyncpg.Pool, job: Job, *, pause_s: float) -> None:
    # The job's handler met a 429: it is throttled (requeued at once, its key paused).
    await store.throttle(
        pool,
        job.id,
        job.lease_token or 0,
        KEY,
        pause_s=pause_s,
        delay_s=pause_s,
        error="429",
        progress_json=None,
    )


async def _states(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT state::text, count(*) AS n FROM pgqueue.jobs GROUP BY 1")
    return {r["state"]: r["n"] for r in rows}


# -- fair turns ------------------------------------------------------------------------------


async def test_a_later_key_takes_turns_with_a_backlog(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many([JobSpec("k", {"u": "a"}, fairness_key="a") for _ in range(150)])
    first = await store.claim(pool, _claim(10))
    assert {j.payload["u"] for j in first} == {"a"}
    for user in ("b", "c", "d"):
        await queue.enqueue_many([JobSpec("k", {"u": user}, fairness_key=user) for _ in range(3)])
    # One claim at a time, as slots free: the newcomers' nine jobs come within the next ten,
    # taking turns (an idle key's first three share one turn), not after the backlog's 140.
    order = [j.payload["u"] for _ in range(12) for j in await store.claim(pool, _claim(1))]
    assert order == ["a"] + ["b", "c", "d"] * 3 + ["a"] * 2
    # The backlog's key then has turns again beside a key that keeps coming.
    await queue.enqueue_many([JobSpec("k", {"u": "b"}, fairness_key="b") for _ in range(10)])
    order = [j.payload["u"] for _ in range(8) for j in await store.claim(pool, _claim(1))]
    assert order.count("a") >= 3 and order.count("b") >= 3


async def test_weights_share_the_turns(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue_many(
        [JobSpec("k", {"u": "light"}, fairness_key="light") for _ in range(40)]
        + [JobSpec("k", {"u": "heavy"}, fairness_key="heavy", fairness_weight=3) for _ in range(40)]
    )
    taken = [j.payload["u"] for j in await store.claim(pool, _claim(20))]
    assert 14 <= taken.count("heavy") <= 16  # three turns for every one of the light key


async def test_priorities_come_before_turns_and_other_jobs_keep_their_time(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.enqueue_many([JobSpec("k", {"u": "free"}, fairness_key="f", priority=5)] * 5)
    pro = await queue.enqueue("k", {"u": "pro"}, fairness_key="p", priority=0)
    (top,) = await store.claim(pool, _claim(1))
    assert top.id == pro.id
    # A job without a key, and a keyed job delayed on purpose, keep the time they were given.
    plain = await queue.enqueue("k", {"u": "plain"})
    delayed = await queue.enqueue("k", fairness_key="f", delay=timedelta(hours=1))
    rows = await pool.fetch(
        "SELECT id, run_at = created_at AS at_enqueue,"
        " run_at > created_at + interval '59 minutes' AS an_hour_later"
        " FROM pgqueue.jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
        [plain.id, delayed.id],
    )
    assert rows[0]["at_enqueue"] and rows[1]["an_hour_later"]


def test_fairness_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="fairness_weight needs a fairness_key"):
        JobSpec("k", fairness_weight=2)
    with pytest.raises(ValueError, match="fairness_weight"):
        JobSpec("k", fairness_key="u", fairness_weight=0)
    with pytest.raises(ValueError, match="budget_keys need a cost"):
        JobSpec("k", budget_keys=["u"])
    with pytest.raises(ValueError, match="cost"):
        JobSpec("k", cost=-1)
    with pytest.raises(ValueError, match="budget key"):
        JobSpec("k", cost=1, budget_keys=[""])


# -- budgets ---------------------------------------------------------------------------------


async def test_a_claim_starts_only_what_the_budget_fits(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_budget("ann", 3)
    await queue.enqueue_many(
        [JobSpec("k", cost=1, budget_keys=["ann", "all"]) for _ in range(5)]
        + [JobSpec("k", {"other": True}, cost=1, budget_keys=["bob"])]
    )
    claimed = await store.claim(pool, _claim(10))
    # Three of ann's fit; bob has no budget row, so no limit.
    assert len(claimed) == 4
    assert await store.claim(pool, _claim(10)) == []
    (budget,) = await queue.budgets(["ann"])
    assert budget["reserved"] == 3 and budget["spent"] == 0 and budget["available"] == 0
    # Parked jobs stay queued, untouched (no attempt spent).
    rows = await pool.fetch("SELECT attempts FROM pgqueue.jobs WHERE state = 'queued'")
    assert [r["attempts"] for r in rows] == [0, 0]
    # The next-due lookup knows when the window ends (a UTC day).
    due_s = await store.seconds_until_due(pool, ["default"], KINDS)
    assert due_s is not None and 0 < due_s <= 86400


async def test_an_attempt_settles_what_it_reported(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    await queue.set_budget("ann", 10)
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        mode = ctx.payload["mode"]
        if mode == "free":
            await ctx.charge(0)  # e.g. it reused an earlier answer
        elif mode == "half":
            await ctx.charge(Decimal("0.5"))
        elif mode == "fail-before-paying":
            await ctx.charge(0)
            raise RuntimeError("no call made")
        # "silent": the whole cost

    modes = ["free", "half", "silent", "fail-before-paying"]
    jobs = await queue.enqueue_many(
        [JobSpec("k", {"mode": m}, cost=2, budget_keys=["ann"], max_attempts=1) for m in modes]
    )
    async with running_worker(registry):

        async def ended() -> bool:
            states = await _states(pool)
            return states.get("succeeded") == 3 and states.get("failed") == 1

        await wait_for(ended, message="four attempts ended")
    (budget,) = await queue.budgets()
    assert budget["spent"] == Decimal("2.5") and budget["reserved"] == 0
    spent = {j.id: (await queue.get(j.id)).spent for j in jobs}  # type: ignore[union-attr]
    assert [spent[j.id] for j in jobs] == [0, Decimal("0.5"), 2, 0]


async def test_racing_claims_never_overspend(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_budget("ann", 7)
    await queue.enqueue_many([JobSpec("k", cost=1, budget_keys=["ann"]) for _ in range(60)])
    await queue.enqueue_many([JobSpec("k", priority=-1) for _ in range(8)])
    seed = await store.claim(pool, _claim(8))

    async def claimer(number: int) -> int:
        taken = 0
        async with pool.acquire() as conn:
            for _ in range(5):
                if number < len(seed):
                    job = seed[number]
                    success = store.Success(job.id, job.lease_token or 0, "null")
                    _, jobs = await store.complete_and_claim(conn, [success], _claim(3))
                    number = len(seed)
                else:
                    jobs = await store.claim(conn, _claim(3, f"w{number}"))
                taken += sum(1 for j in jobs if j.budget_keys)
        return taken

    assert sum(await asyncio.gather(*(claimer(n) for n in range(8)))) == 7
    (budget,) = await queue.budgets()
    assert budget["reserved"] == 7


async def test_raising_a_budget_starts_parked_jobs_at_once(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    await queue.set_budget("ann", 1)
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        return None

    await queue.enqueue_many([JobSpec("k", cost=1, budget_keys=["ann"]) for _ in range(3)])
    async with running_worker(registry, poll_interval_s=60):
        await wait_for(lambda: _succeeded(pool, 1), message="the one that fits")
        await wait_for(lambda: _settled(queue, "ann", 1), message="its charge settled")
        assert (await _states(pool)).get("queued") == 2  # parked, not failed
        began = time.monotonic()
        await queue.set_budget("ann", 3)
        await wait_for(lambda: _succeeded(pool, 3), timeout=5, message="the raised budget")
        assert time.monotonic() - began < 2  # a wake-up, not the 60 s poll


async def _settled(queue: Queue, key: str, spent: int) -> bool:
    (budget,) = await queue.budgets([key])
    return bool(budget["spent"] == spent and budget["reserved"] == 0)


async def _succeeded(pool: asyncpg.Pool, n: int) -> bool:
    return (await _states(pool)).get("succeeded") == n


# -- the breaker -----------------------------------------------------------------------------


def test_breaker_settings_parse() -> None:
    assert Breaker.parse("5/30s,open=30s") == Breaker(5, 30.0, 30.0)
    assert str(Breaker.parse(" 3 / 10s , open = 2.5s ")) == "3/10s,open=2.5s"
    assert Breaker.parse("off") is None
    for bad in ("5/30s", "0/30s,open=1s", "5/0s,open=1s", "x"):
        with pytest.raises(ValueError):
            Breaker.parse(bad)


async def test_an_outage_opens_the_breaker_and_waiting_jobs_spend_no_attempt(
    queue: Queue, pool: asyncpg.Pool, running_worker: WorkerFactory
) -> None:
    await queue.set_breaker(KEY, threshold=3, window_s=30, open_s=1.0)
    down_until = time.monotonic() + 2.5
    calls: list[float] = []
    registry = Registry()

    @registry.handler("k")
    async def handler(ctx: JobContext) -> None:
        calls.append(time.monotonic())
        if time.monotonic() < down_until:
            raise UpstreamDown("503 Service Unavailable")

    await queue.enqueue_many(
        [JobSpec("k", {"n": n}, rate_limit_key=KEY, max_attempts=2) for n in range(6)]
    )
    # The failures before the threshold spend an attempt and retry after their backoff: 1 s,
    # so that a retry cannot race the breaker's opening (with the tests' 0.1 s, a loaded
    # machine let one through before the third failure's write committed).
    slow_retry = retry.RetryPolicy(base_s=1.0, cap_s=1.0)
    async with (
        running_worker(registry, concurrency=3, retry_policy=slow_retry),
        running_worker(registry, concurrency=3, retry_policy=slow_retry),
    ):
        await wait_for(lambda: _succeeded(pool, 6), timeout=20, message="all after the outage")
    outage = [c for c in calls if c < down_until]
    # The threshold's calls (and what was in flight with them), then one probe per open
    # period: 1 s, then 2 s; never the six shots times their attempts.
    assert len(outage) <= 3 + 3 + 2
    rows = await pool.fetch("SELECT attempts FROM pgqueue.jobs")
    assert all(r["attempts"] <= 2 for r in rows)
    (limit,) = await queue.rate_limits()
    assert limit["breaker_state"] == "closed" and limit["breaker_failures"] == 0


async def test_the_breaker_holds_every_claim_while_open(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_breaker(KEY, threshold=1, window_s=30, open_s=60)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(3)])
    (job,) = await store.claim(pool, _claim(1))
    written, spared = await store.fail_upstream(
        pool, job.id, job.lease_token or 0, KEY, delay_s=5, error="503", progress_json=None
    )
    assert spared and written is not None and written.state is JobState.QUEUED
    assert written.attempts == 0
    assert await store.claim(pool, _claim(10)) == []
    (limit,) = await queue.rate_limits()
    assert limit["breaker_state"] == "open" and limit["blocked_until"] is not None
    # Its open period passes: exactly one probe starts, and the key is held while it runs.
    await pool.execute("UPDATE pgqueue.rate_limits SET breaker_until = now() - interval '1s'")
    probes = await store.claim(pool, _claim(10))
    assert len(probes) == 1
    assert await store.claim(pool, _claim(10)) == []
    (limit,) = await queue.rate_limits()
    assert limit["breaker_state"] == "half_open"
    # The probe fails: open again, twice as long.
    (probe,) = probes
    await store.fail_upstream(
        pool, probe.id, probe.lease_token or 0, KEY, delay_s=5, error="503", progress_json=None
    )
    row = await pool.fetchrow(
        "SELECT breaker_state, extract(epoch FROM breaker_until - now()) AS left_s"
        " FROM pgqueue.rate_limits"
    )
    assert row["breaker_state"] == "open" and 110 < row["left_s"] <= 120
    # A probe that succeeds closes it.
    await pool.execute("UPDATE pgqueue.rate_limits SET breaker_until = now() - interval '1s'")
    (probe,) = await store.claim(pool, _claim(10))
    await store.complete(pool, [store.Success(probe.id, probe.lease_token or 0, "null")])
    assert len(await store.claim(pool, _claim(10))) == 2


async def test_a_429_never_trips_the_breaker(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_breaker(KEY, threshold=1, window_s=30, open_s=60)
    await queue.enqueue("k", rate_limit_key=KEY)
    (job,) = await store.claim(pool, _claim(1))
    await _answered_429(pool, job, pause_s=0.01)
    (limit,) = await queue.rate_limits()
    assert limit["breaker_state"] == "closed" and limit["breaker_failures"] == 0


# -- the adaptive rate -----------------------------------------------------------------------


async def _key_row(pool: asyncpg.Pool) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM pgqueue.rate_limits WHERE key = $1", KEY)
    assert row is not None
    return row


async def _pace_passed(pool: asyncpg.Pool, ago: str) -> None:
    # The key's next start was due `ago`: time passed, without waiting for it.
    await pool.execute(
        "UPDATE pgqueue.rate_limits"
        " SET paced_at = now() - $1::text::interval, next_start_at = NULL",
        ago,
    )


async def _adaptive_key(queue: Queue, jobs: int) -> None:
    # A key learning its rate over 1 s windows (ceiling 100), and `jobs` queued jobs of it.
    await queue.set_adaptive_rate_limit(KEY, ceiling=100, period_s=1.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(jobs)])


async def _set_key(pool: asyncpg.Pool, sets: str) -> None:
    # The key's row as a test needs it (`sets`: an UPDATE's SET list).
    await pool.execute(f"UPDATE pgqueue.rate_limits SET {sets} WHERE key = $1", KEY)


async def _pace_free(pool: asyncpg.Pool) -> None:
    # The key's pace lets the next claim start at once.
    await _set_key(pool, "paced_at = NULL, next_start_at = NULL")


async def _succeed(pool: asyncpg.Pool, jobs: list[Job]) -> None:
    await store.complete(pool, [store.Success(j.id, j.lease_token or 0, "null") for j in jobs])


async def test_a_429_halves_an_adaptive_rate_and_its_window_says_what_the_upstream_took(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.set_adaptive_rate_limit(KEY, ceiling=8, period_s=100.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(40)])
    # Paced from the first start: one start per spacing (100 s / 8), with one of slack.
    claimed = await store.claim(pool, _claim(20))
    assert len(claimed) == 2
    assert await store.claim(pool, _claim(20)) == []
    # Time passes (the pace's next start is moved to the past): six more start.
    for _ in range(3):
        await _pace_passed(pool, "20 s")
        claimed += await store.claim(pool, _claim(20))
    assert len(claimed) == 8
    await _answered_429(pool, claimed[0], pause_s=0.0)
    (limit,) = await queue.rate_limits()
    # Half of the eight that got the 429; the upstream took at most the seven others.
    assert limit["adaptive"] and limit["capacity"] == 4 and limit["learnt"] == 4
    assert (await _key_row(pool))["quota_seen"] == 7
    # A second 429 of the same window is the same signal, no second halving, but it says one
    # more start was refused: the upstream took six, and the rate follows that down.
    await _answered_429(pool, claimed[1], pause_s=0.0)
    row = await _key_row(pool)
    assert row["quota_seen"] == 6 and row["learnt"] == 3 and row["capacity"] == 3
    # Successes while the pace binds climb to 97% of what the upstream took, no further.
    await _succeed(pool, claimed[2:])
    learnt = (await _key_row(pool))["learnt"]
    assert learnt == pytest.approx(6 * 0.97)
    # Setting it again (a worker restarting) keeps what was learnt, and what it knows.
    await queue.set_adaptive_rate_limit(KEY, ceiling=8, period_s=100.0)
    row = await _key_row(pool)
    assert row["learnt"] == learnt and row["quota_seen"] == 6
    # A new ceiling starts anew, from it.
    await queue.set_adaptive_rate_limit(KEY, ceiling=9, period_s=100.0)
    row = await _key_row(pool)
    assert row["learnt"] == 9 and row["quota_seen"] is None and row["paced_at"] is None
    # A fixed limit ends the learning.
    await queue.set_rate_limit(KEY, 8, 1.0)
    (limit,) = await queue.rate_limits()
    assert not limit["adaptive"] and limit["capacity"] == 8


async def test_an_adaptive_key_paces_its_starts(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.set_adaptive_rate_limit(KEY, ceiling=10, period_s=100.0)  # one per 10 s
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(10)])
    first = await store.claim(pool, _claim(10))
    assert len(first) == 2  # one, and one spacing of slack
    row = await _key_row(pool)
    assert row["next_start_at"] == row["paced_at"]
    spacing = (row["paced_at"] - max(row["starts"])).total_seconds()
    assert spacing == pytest.approx(10.0, abs=0.5)
    assert await store.claim(pool, _claim(10)) == []
    # Its time came less than a spacing ago: one start.
    await _pace_passed(pool, "1 s")
    assert len(await store.claim(pool, _claim(10))) == 1
    # It came long ago (an idle key): still one start and one of slack, no banked burst.
    await _pace_passed(pool, "1 h")
    assert len(await store.claim(pool, _claim(10))) == 2


async def test_an_adaptive_key_climbs_back_holds_below_the_quota_then_probes(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await _adaptive_key(queue, 5)
    jobs = await store.claim(pool, _claim(4))
    assert len(jobs) == 2

    async def state(**values: object) -> None:
        sets = ", ".join(f"{name} = ${n + 2}" for n, name in enumerate(values))
        await pool.execute(
            f"UPDATE pgqueue.rate_limits SET {sets}, bound_at = now() WHERE key = $1",
            KEY,
            *values.values(),
        )

    later = datetime.now(UTC) + timedelta(minutes=1)
    # Below what it held a whole period: back within half a period (+held/rate a success).
    await state(learnt=4.0, sustained=8.0, quota_seen=10.0, good_since=later, probe_after=later)
    await _succeed(pool, jobs[:1])
    assert (await _key_row(pool))["learnt"] == 6.0
    # Past it, to 97% of the quota seen, within a period (+aim/rate a success).
    await state(learnt=8.0)
    await _succeed(pool, jobs[1:2])
    assert (await _key_row(pool))["learnt"] == pytest.approx(8 + 9.7 / 8)
    # There it holds until probe_after.
    await _pace_free(pool)
    more = await store.claim(pool, _claim(2))
    await state(learnt=9.7)
    await _succeed(pool, more[:1])
    assert (await _key_row(pool))["learnt"] == pytest.approx(9.7)
    # Then a probe begins: it climbs past the quota seen from where it was, one start per
    # period a period of successes.
    await state(probe_after=datetime.now(UTC) - timedelta(seconds=1))
    await _succeed(pool, more[1:2])
    row = await _key_row(pool)
    assert row["learnt"] == pytest.approx(9.7 + 1 / 9.7)
    assert row["probe_from"] == pytest.approx(9.7) and row["probe_step"] == 1.0
    assert row["quota_seen"] == 10 and row["capacity"] == 10
    # Half a period of it with no refusal: the step grows fourfold. (The quota seen would
    # become what the last window took, but this window took less than it knows.)
    await _pace_free(pool)
    (last,) = await store.claim(pool, _claim(1))
    await state(probe_step_at=datetime.now(UTC) - timedelta(seconds=1))
    await _succeed(pool, [last])
    row = await _key_row(pool)
    assert row["probe_step"] == 4.0 and row["quota_seen"] == 10


async def test_an_adaptive_key_without_a_ceiling_learns_from_its_first_429(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.set_adaptive_rate_limit(KEY, period_s=60.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(30)])
    # It starts at 25 starts a period, paced (here one per 2.4 s), with one of slack.
    (limit,) = await queue.rate_limits()
    assert limit["capacity"] == 25 and limit["learnt"] == 25
    claimed = await store.claim(pool, _claim(10))
    assert len(claimed) == 2
    for _ in range(4):
        await _pace_passed(pool, "3 s")
        claimed += await store.claim(pool, _claim(10))
    assert len(claimed) == 10
    await _answered_429(pool, claimed[0], pause_s=0.0)
    (limit,) = await queue.rate_limits()
    assert limit["capacity"] == 5  # half of the ten that started in the window
    assert (await _key_row(pool))["quota_seen"] == 9
    assert await store.claim(pool, _claim(10)) == []
    # The 429s of a burst say how many the upstream took: each further one refines it.
    for job in claimed[1:4]:
        await _answered_429(pool, job, pause_s=0.0)
    row = await _key_row(pool)
    assert row["quota_seen"] == 6 and row["learnt"] == 3


async def test_a_refused_probe_costs_one_429_and_no_pause(queue: Queue, pool: asyncpg.Pool) -> None:
    await _adaptive_key(queue, 6)
    jobs = await store.claim(pool, _claim(2))
    # A key that measured a quota of 10 and probes past it, from 9.7.
    await _set_key(
        pool,
        "learnt = 10.5, capacity = 11, quota_seen = 10,"
        " sustained = 10.5, probe_from = 9.7, probe_step = 2, probe_step_at = now(),"
        " last_cut_at = now() - interval '1 min'",
    )
    await _answered_429(pool, jobs[0], pause_s=30.0)
    row = await _key_row(pool)
    # The refusal: no pause, back to 97% of the quota seen, the probe over, and a hold of one
    # period before the next; the refused start leaves the window (it never entered theirs).
    assert row["paused_until"] is None
    assert row["learnt"] == pytest.approx(9.7) and row["capacity"] == 10
    assert row["sustained"] == pytest.approx(9.7) and row["probe_from"] is None
    assert row["probe_refusals"] == 1 and len(row["starts"]) == 1
    assert 0.5 < (row["probe_after"] - row["refused_at"]).total_seconds() <= 1.0
    # The refused job alone waits out its Retry-After; the others still start.
    job = await pool.fetchrow(
        "SELECT state::text, run_at - now() AS wait FROM pgqueue.jobs WHERE id = $1", jobs[0].id
    )
    assert job["state"] == "queued" and job["wait"] > timedelta(seconds=29)
    await _pace_free(pool)
    (later,) = await store.claim(pool, _claim(1))
    # A 429 within the period to a call that started after the refusal is no refusal: the
    # quota fell. The key pauses and halves.
    await _answered_429(pool, later, pause_s=30.0)
    row = await _key_row(pool)
    assert row["paused_until"] is not None and row["learnt"] <= 9.7 / 2
    assert row["probe_refusals"] == 0


async def test_a_refused_start_gives_back_its_place_in_the_pace(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await _adaptive_key(queue, 2)
    jobs = await store.claim(pool, _claim(1))
    # A probe at 10 a period whose next start is due in 0.2 s: the refused start took the
    # spacing (0.1 s) before that.
    await _set_key(
        pool,
        "learnt = 10, capacity = 10, quota_seen = 9,"
        " probe_from = 8.7, last_cut_at = now() - interval '1 min',"
        " paced_at = clock_timestamp() + interval '0.2 s'",
    )
    await _answered_429(pool, jobs[0], pause_s=1.0)
    row = await _key_row(pool)
    assert row["refused_at"] is not None and row["paused_until"] is None
    # Its window is empty, so only the pace holds the next start: 0.1 s from now, not 0.2.
    ahead = (row["paced_at"] - row["refused_at"]).total_seconds()
    assert 0.05 < ahead < 0.15
    assert row["next_start_at"] == row["paced_at"]


async def test_a_probe_that_finds_the_quota_rose_doubles_its_rate(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await _adaptive_key(queue, 4)
    jobs = await store.claim(pool, _claim(2))
    await _pace_free(pool)
    jobs += await store.claim(pool, _claim(2))
    assert len(jobs) == 4
    # It knew a quota of 3 and probed past it for half a period: its window holds 4 starts,
    # none refused. The upstream took more than it knew: the quota rose.
    await _set_key(
        pool,
        "learnt = 3.2, capacity = 4, quota_seen = 3,"
        " sustained = 2.91, probe_from = 2.91, probe_step = 1,"
        " probe_step_at = now() - interval '0.6 s', bound_at = now(),"
        " last_cut_at = now() - interval '1 min'",
    )
    await _succeed(pool, jobs[:1])
    row = await _key_row(pool)
    # The quota measured is what it took; the rate jumps to twice that, and its step doubles
    # the rate each period from here.
    assert row["quota_seen"] == 4 and row["probe_refusals"] == 0
    assert row["learnt"] == 8 and row["capacity"] == 8
    assert row["probe_step"] == 16


async def test_a_call_on_its_way_when_a_probe_was_refused_is_the_same_answer(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await _adaptive_key(queue, 4)
    jobs = await store.claim(pool, _claim(2))
    # A fast probe had two calls past the quota in flight; the first one's 429 refused it.
    await _set_key(
        pool,
        "learnt = 14, capacity = 14, quota_seen = 10,"
        " probe_from = 9.7, last_cut_at = now() - interval '1 min'",
    )
    await _answered_429(pool, jobs[0], pause_s=1.0)
    before = await _key_row(pool)
    assert before["refused_at"] is not None and before["paused_until"] is None
    # The second, started before that refusal was written: no pause, no second refusal; it
    # leaves the window as the first did.
    await _answered_429(pool, jobs[1], pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is None and row["probe_refusals"] == 1
    assert row["learnt"] == before["learnt"] and row["starts"] == []
    # A call started after the refusal that draws a 429 is the quota falling: pause, halve.
    await _pace_free(pool)
    (late,) = await store.claim(pool, _claim(1))
    await _answered_429(pool, late, pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is not None and row["learnt"] <= 9.7 / 2


async def test_a_key_with_no_ceiling_climbs_until_its_first_429(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # No quota met yet: while its pace binds it climbs as a probe does, not held at 25.
    await queue.set_adaptive_rate_limit(KEY, period_s=1.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(6)])
    jobs = await store.claim(pool, _claim(2))
    for job in jobs:
        await _set_key(
            pool,
            "bound_at = now(), probe_step_at = now() - interval '1 s'",
        )
        await _succeed(pool, [job])
    row = await _key_row(pool)
    assert row["learnt"] > 25 and row["probe_from"] == 25
    assert row["quota_seen"] == 2  # what its window took, every start of it accepted
    # More than it knew was taken: from here its step doubles its rate each period.
    assert row["probe_step"] == pytest.approx(2 * row["learnt"])
    # Its first 429 ever is a cut all the same (what its climb saw accepted is no quota met):
    # pause and halve.
    await _pace_free(pool)
    (more,) = await store.claim(pool, _claim(1))
    learnt = (await _key_row(pool))["learnt"]
    await _answered_429(pool, more, pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is not None and row["learnt"] <= learnt / 2


async def test_a_fresh_key_s_first_429_pauses_and_halves(queue: Queue, pool: asyncpg.Pool) -> None:
    # Before its climb measured anything (the first half period), it knows no quota: the 429
    # is the quota met, not a refusal.
    await queue.set_adaptive_rate_limit(KEY, period_s=1.0)
    await queue.enqueue_many([JobSpec("k", rate_limit_key=KEY) for _ in range(2)])
    jobs = await store.claim(pool, _claim(2))
    await _answered_429(pool, jobs[0], pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is not None and row["learnt"] == 1


async def test_a_429_with_the_window_past_the_quota_is_a_refusal_and_below_it_a_cut(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    # Not probing, holding at 97% of a quota of 2 it met before: three starts in its window
    # (the upstream's calls arrive a few ms late, so one more than the quota lands in its
    # window now and then) and a 429 is a refusal; with fewer, the quota fell.
    await _adaptive_key(queue, 4)
    jobs = await store.claim(pool, _claim(2))
    await _pace_free(pool)
    jobs += await store.claim(pool, _claim(1))
    assert len(jobs) == 3
    quota_met = (
        "UPDATE pgqueue.rate_limits SET learnt = 1.94, capacity = 2, quota_seen = 2,"
        " last_cut_at = now() - interval '1 min', refused_at = NULL WHERE key = $1"
    )
    await pool.execute(quota_met, KEY)
    await _answered_429(pool, jobs[2], pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is None and row["refused_at"] is not None
    assert row["learnt"] == pytest.approx(1.94) and len(row["starts"]) == 2
    # Two starts in the window, none past the quota: a cut.
    await pool.execute(quota_met, KEY)
    await _answered_429(pool, jobs[1], pause_s=1.0)
    row = await _key_row(pool)
    assert row["paused_until"] is not None and row["learnt"] <= 1


async def test_refusals_in_a_row_hold_the_key_longer(queue: Queue, pool: asyncpg.Pool) -> None:
    await _adaptive_key(queue, 4)
    holds = []
    for job in await store.claim(pool, _claim(2)) + [None]:
        if job is None:
            await _pace_free(pool)
            (job,) = await store.claim(pool, _claim(1))
        await _set_key(
            pool,
            "learnt = 10.5, quota_seen = 10, probe_from = 9.7,"
            " refused_at = now() - interval '2 s', last_cut_at = now() - interval '1 min'"
            "",
        )
        await _answered_429(pool, job, pause_s=1.0)
        row = await _key_row(pool)
        assert row["paused_until"] is None
        holds.append(round((row["probe_after"] - row["refused_at"]).total_seconds()))
    assert holds == [1, 2, 3]


async def test_retry_later_throttle_still_pauses(queue: Queue) -> None:
    # The throttle path is unchanged for a key that does not adapt.
    assert RetryLater("x", throttle_s=1).throttle_s == 1
