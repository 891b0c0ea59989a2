"""The completer on its own, against a real Postgres: each kind of outcome is written by its
statement, successes handed in together share one (fused with the claim of the jobs that take
their slots), nothing is written for a lease that is gone, and every slot comes back once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from pgqueue import Queue, errors, models, store
from pgqueue.worker import attempt
from pgqueue.worker.completer import Completer, pipeline_for
from pgqueue.worker.context import JobContext
from pgqueue.worker.held import RunningJob
from pgqueue.worker.producer import ClaimTemplate, Handoff, Producer
from pgqueue.worker.slots import Slots

KEY = "upstream"
TEMPLATE = ClaimTemplate(queues=("default",), kinds=("k",), worker_id="w", lease_s=30.0)


class _Producer(Producer):
    """A producer that is never run: the completer's calls back into it are what is tested
    (the claims of a hand-off are kept, not started)."""

    def __init__(self, pool: asyncpg.Pool, capacity: int) -> None:
        self.started: list[models.Job] = []
        self.handoffs: list[int] = []  # completions per statement
        super().__init__(pool, Slots(capacity), TEMPLATE, self.started.append, poll_interval_s=1)

    def handoff(self, completions: int) -> Handoff | None:
        self.handoffs.append(completions)
        return super().handoff(completions)


@pytest.fixture
async def producer(pool: asyncpg.Pool) -> _Producer:
    return _Producer(pool, capacity=10)


@pytest.fixture
async def completer(pool: asyncpg.Pool, producer: _Producer) -> AsyncIterator[Completer]:
    completer = Completer(pool, producer)
    task = asyncio.create_task(completer.run())
    yield completer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _hold(
    queue: Queue, pool: asyncpg.Pool, producer: Producer, count: int, **options: object
) -> list[RunningJob]:
    """Enqueue and claim `count` jobs, each holding a slot, as the worker would."""
    for _ in range(count):
        await queue.enqueue("k", **options)  # type: ignore[arg-type]
    producer.slots.in_use += count
    request = TEMPLATE.request(count)
    claimed = await store.claim(pool, request)
    assert len(claimed) == count
    deadline = time.monotonic() + TEMPLATE.lease_s
    return [RunningJob(job, JobContext(job, pool), deadline) for job in claimed]


async def _states(pool: asyncpg.Pool, held: Sequence[RunningJob]) -> list[str]:
    rows = await pool.fetch(
        "SELECT state::text FROM pgqueue.jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
        [r.job.id for r in held],
    )
    return [row["state"] for row in rows]


async def _wait(written: asyncio.Future[attempt.Written]) -> attempt.Written:
    return await written


def _success(n: int) -> attempt.Succeeded:
    return attempt.Succeeded({"n": n}, f'{{"n": {n}}}')


async def test_successes_handed_in_together_share_one_statement(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer
) -> None:
    held = await _hold(queue, pool, producer, 5)
    producer.stop()  # nothing to claim into the freed slots: the plain COMPLETE_JOBS
    completer = Completer(pool, producer)
    # Handed in before the completer runs, as a burst of finishing handlers would be.
    finishing = [completer.finish(r, _success(i)) for i, r in enumerate(held)]
    running = asyncio.create_task(completer.run())
    try:
        written = await asyncio.gather(*finishing)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert written == [models.JobState.SUCCEEDED] * 5
    assert producer.handoffs == [5] and producer.slots.in_use == 0
    results = await pool.fetch("SELECT result FROM pgqueue.jobs ORDER BY id")
    assert [row["result"] for row in results] == [f'{{"n": {i}}}' for i in range(5)]
    assert await _states(pool, held) == ["succeeded"] * 5


async def test_the_freed_slots_claim_the_next_jobs_in_the_same_statement(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    held = await _hold(queue, pool, producer, 2)
    waiting = [(await queue.enqueue("k")).id for _ in range(3)]
    producer.slots.capacity = 2  # the two held jobs fill the worker
    written = await asyncio.gather(*(completer.finish(r, _success(1)) for r in held))
    assert written == [models.JobState.SUCCEEDED] * 2
    # One statement completed both and claimed two jobs into their slots.
    assert len(producer.handoffs) == 1
    assert sorted(job.id for job in producer.started) == waiting[:2]
    assert producer.slots.in_use == 2  # now held by the claimed jobs
    assert await _states(pool, held) == ["succeeded"] * 2


async def test_a_success_under_a_lost_lease_is_not_written(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    (running,) = await _hold(queue, pool, producer, 1)
    producer.stop()
    token = running.lease_token
    running.job = running.job._replace(lease_token=token + 1000)  # someone else's claim now
    assert await completer.finish(running, _success(1)) is None
    assert producer.slots.in_use == 0
    assert await _states(pool, [running]) == ["running"]


@pytest.mark.parametrize(
    ("outcome", "state", "attempts"),
    [
        (attempt.Failed(ValueError(), "boom", True, 60.0), models.JobState.QUEUED, 1),
        (attempt.Failed(ValueError(), "boom", False, 60.0), models.JobState.FAILED, 1),
        (
            attempt.Throttled(errors.RetryLater("429", throttle_s=5), "boom", KEY, 5.0, 6.0),
            models.JobState.QUEUED,
            0,  # the attempt is given back
        ),
        (attempt.Cancelled(), models.JobState.CANCELLED, 1),
    ],
    ids=["retry", "fail", "throttle", "cancel"],
)
async def test_an_outcome_other_than_success_is_written_by_its_statement(
    queue: Queue,
    pool: asyncpg.Pool,
    producer: _Producer,
    completer: Completer,
    outcome: attempt.Outcome,
    state: models.JobState,
    attempts: int,
) -> None:
    (running,) = await _hold(queue, pool, producer, 1, rate_limit_key=KEY)
    running.context.restore_pending_progress('{"percent": 40}')  # throttled, not yet written
    written = await completer.finish(running, outcome)
    assert isinstance(written, models.Job)
    assert written.id == running.job.id and written.state is state
    assert written.attempts == attempts and written.lease_expires_at is None
    row = await queue.get(running.job.id)
    assert row is not None and row.state is state
    if isinstance(outcome, attempt.Cancelled):
        assert row.last_error == attempt.CANCELLED_ERROR
    else:
        assert row.last_error == "boom" and row.progress == {"percent": 40}
    paused = [limit["key"] for limit in await queue.rate_limits()]
    assert paused == ([KEY] if isinstance(outcome, attempt.Throttled) else [])
    assert producer.slots.in_use == 0


async def test_a_release_gives_the_attempt_back(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    (running,) = await _hold(queue, pool, producer, 1)
    assert await completer.finish(running, attempt.Released()) is models.JobState.QUEUED
    row = await queue.get(running.job.id)
    assert row is not None and row.state is models.JobState.QUEUED and row.attempts == 0
    assert producer.slots.in_use == 0


async def test_a_release_of_a_job_whose_cancel_was_requested_ends_it_cancelled(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    (running,) = await _hold(queue, pool, producer, 1)
    await queue.cancel(running.job.id)  # a running job: the cancel is requested
    assert await completer.finish(running, attempt.Released()) is models.JobState.CANCELLED
    assert await _states(pool, [running]) == ["cancelled"]


@pytest.mark.parametrize(
    ("outcome", "written"),
    [
        (attempt.LeaseLost(stalled=True), None),
        (attempt.Succeeded({"n": 1}, None), models.JobState.SUCCEEDED),
    ],
    ids=["lease-lost", "written-by-the-handler"],
)
async def test_nothing_to_write_only_frees_the_slot(
    queue: Queue,
    pool: asyncpg.Pool,
    producer: _Producer,
    completer: Completer,
    outcome: attempt.Outcome,
    written: attempt.Written,
) -> None:
    (running,) = await _hold(queue, pool, producer, 1)
    assert await completer.finish(running, outcome) == written
    assert producer.slots.in_use == 0 and not completer.busy
    assert await _states(pool, [running]) == ["running"]  # untouched


async def test_a_stopped_completer_writes_nothing_and_frees_every_slot(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer
) -> None:
    held = await _hold(queue, pool, producer, 2)
    completer = Completer(pool, producer)
    running = asyncio.create_task(completer.run())
    await asyncio.sleep(0)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    failed = attempt.Failed(ValueError(), "boom", True, 1.0)
    assert await completer.finish(held[0], _success(1)) is None
    assert await completer.finish(held[1], failed) is None
    # Left to the reaper, once their leases expire.
    assert producer.slots.in_use == 0
    assert await _states(pool, held) == ["running"] * 2


async def test_a_cancelled_caller_cannot_stop_the_write(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    held = await _hold(queue, pool, producer, 2)
    producer.stop()
    failed = attempt.Failed(ValueError(), "boom", False, 1.0)
    callers = [
        asyncio.create_task(_wait(completer.finish(held[0], _success(1)))),
        asyncio.create_task(_wait(completer.finish(held[1], failed))),
    ]
    await asyncio.sleep(0)  # both waiting
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    assert await completer.flush(5.0)
    assert await _states(pool, held) == ["succeeded", "failed"]
    assert producer.slots.in_use == 0 and not completer.busy


async def test_flush_waits_for_every_outcome_handed_in(
    queue: Queue, pool: asyncpg.Pool, producer: _Producer, completer: Completer
) -> None:
    held = await _hold(queue, pool, producer, 3)
    producer.stop()
    waiters = [completer.finish(r, _success(1)) for r in held]
    assert completer.busy
    assert await completer.flush(5.0)
    assert not completer.busy and all(waiter.done() for waiter in waiters)
    assert await _states(pool, held) == ["succeeded"] * 3


def test_a_big_worker_keeps_two_statements_in_flight() -> None:
    assert pipeline_for(3) == (1, 2000)
    assert pipeline_for(50) == (1, 2000)
    assert pipeline_for(127) == (1, 2000)
    assert pipeline_for(128) == (2, 64)
    assert pipeline_for(500) == (2, 250)
    assert pipeline_for(10_000) == (2, 2000)


def test_a_completer_needs_room_for_one_write() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Completer(None, Producer(None, Slots(1), TEMPLATE, print, poll_interval_s=1), max_batch=0)
