"""The worker's parts on their own: the producer's slot accounting, the heartbeat's decisions,
and the shape rules of the package (which module may run SQL, whole-literal statements)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pgqueue import models, queries, store
from pgqueue.worker.context import JobContext
from pgqueue.worker.heartbeat import Heartbeat
from pgqueue.worker.held import Phase, RunningJob, StopReason
from pgqueue.worker.producer import ClaimTemplate, Producer
from pgqueue.worker.slots import Slots

PACKAGE = Path(__file__).resolve().parents[2] / "pgqueue"
TEMPLATE = ClaimTemplate(queues=("default",), kinds=("k",), worker_id="w", lease_s=30.0)


def _job(job_id: int) -> models.Job:
    now = datetime.now(UTC)
    return models.Job(
        id=job_id, queue="default", kind="k", payload={}, state=models.JobState.RUNNING,
        priority=0, attempts=1, max_attempts=3, run_at=now, lease_expires_at=now,
        lease_token=100 + job_id, worker_id="w", last_error=None, progress=None, result=None,
        idempotency_key=None, concurrency_key=None, concurrency_limit=None, timeout_s=None,
        cancel_requested_at=None, created_at=now, started_at=now, finished_at=None,
    )  # fmt: skip


def _producer(capacity: int) -> tuple[Producer, list[models.Job]]:
    started: list[models.Job] = []
    producer = Producer(None, Slots(capacity), TEMPLATE, started.append, poll_interval_s=1.0)
    return producer, started


def test_a_handoff_lends_the_freed_slots_and_every_free_one() -> None:
    producer, started = _producer(10)
    producer.slots.in_use = 4  # four jobs finished and are being written; six slots free
    handoff = producer.handoff(4)
    assert handoff is not None
    assert handoff.request.limit == 10 and handoff.freed == 4 and handoff.taken == 6
    assert producer.slots.free == 0
    producer.delivered(handoff, [_job(1), _job(2), _job(3)])
    assert [job.id for job in started] == [1, 2, 3]
    assert producer.slots.in_use == 3  # the claimed jobs hold theirs; the rest came back


def test_a_failed_handoff_returns_only_the_slots_it_took() -> None:
    producer, started = _producer(5)
    producer.slots.in_use = 2
    handoff = producer.handoff(2)
    assert handoff is not None and handoff.taken == 3
    producer.failed(handoff)
    # The two completions keep their slots while they are written again (or given up).
    assert producer.slots.in_use == 2 and started == []
    producer.release(2)
    assert producer.slots.in_use == 0


def test_a_stopping_producer_lends_nothing() -> None:
    producer, _ = _producer(3)
    producer.slots.in_use = 1
    producer.stop()
    assert producer.handoff(1) is None
    assert producer.slots.in_use == 1


def test_slots_never_go_below_zero() -> None:
    slots = Slots(2)
    assert slots.take_all() == 2
    slots.give_back(2)
    with pytest.raises(AssertionError, match="more slots given back"):
        slots.give_back(1)


def _running(job_id: int, phase: Phase = Phase.RUNNING) -> RunningJob:
    job = _job(job_id)
    running = RunningJob(job=job, context=JobContext(job, None), lease_deadline=0.0, phase=phase)
    running.task = _FakeTask()  # type: ignore[assignment]
    return running


class _FakeTask:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _heartbeat(jobs: dict[int, RunningJob]) -> Heartbeat:
    return Heartbeat("postgresql://unused", jobs, lease_s=30.0, interval_s=10.0)


def test_a_renewal_that_reads_a_finishing_job_as_lost_does_not_cancel_it() -> None:
    # Its success was written while the renewal was in flight: that is no lost lease.
    finishing, running = _running(1, Phase.FINISHING), _running(2)
    heartbeat = _heartbeat({1: finishing, 2: running})
    lost = store.Renewal(frozenset(), frozenset(), frozenset(), frozenset({1, 2}))
    heartbeat.apply(lost, sent_at=0.0, leases=[])
    assert not _cancelled(finishing) and finishing.stop_reason is None
    assert _cancelled(running) and running.stop_reason is StopReason.LEASE_LOST


def test_a_busy_lease_keeps_its_progress_for_the_next_renewal() -> None:
    running = _running(1)
    heartbeat = _heartbeat({1: running})
    busy = store.Renewal(frozenset(), frozenset({1}), frozenset(), frozenset())
    heartbeat.apply(busy, sent_at=5.0, leases=[store.HeldLease(1, 101, '{"percent": 5}')])
    assert running.context.take_pending_progress() == '{"percent": 5}'
    assert not _cancelled(running) and running.lease_deadline == 0.0


def test_a_busy_lease_held_by_its_own_transaction_counts_as_renewed() -> None:
    running = _running(1)
    running.context.in_transaction = True
    busy = store.Renewal(frozenset(), frozenset({1}), frozenset(), frozenset())
    _heartbeat({1: running}).apply(busy, sent_at=5.0, leases=[])
    assert running.lease_deadline == 35.0


def test_the_police_cancel_only_handlers_past_their_deadline() -> None:
    late, fresh, writing = _running(1), _running(2), _running(3, Phase.FINISHING)
    fresh.lease_deadline = 100.0
    _heartbeat({1: late, 2: fresh, 3: writing}).police(now=50.0)
    assert [_cancelled(r) for r in (late, fresh, writing)] == [True, False, False]


def _cancelled(running: RunningJob) -> bool:
    task: Any = running.task
    return bool(task.cancelled)


def test_only_the_store_runs_sql_in_pgqueue() -> None:
    # Any module of the store package (pgqueue/store/) runs job SQL; the listener's keep-alive
    # ping and the schema runner's DDL are the only other SQL.
    allowed = {"worker/listener.py"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in allowed or relative.startswith(("store/", "schema/")):
            continue
        text = path.read_text()
        if re.search(r"\.(fetch|fetchrow|fetchval|execute|executemany)\(", text):
            offenders.append(relative)
    assert offenders == []


def test_statements_are_whole_literals() -> None:
    for name in dir(queries):
        value = getattr(queries, name)
        if name.isupper() and isinstance(value, str):
            assert "{" not in value.replace("'{}'", ""), f"{name} looks like a template"


def _claim_part(sql: str) -> str:
    start = sql.index("candidates AS MATERIALIZED")
    end = sql.index("UPDATE pgqueue.jobs AS j\n", start)
    body = re.sub(r"\s+", " ", sql[start:end])
    # The fused statement also counts and locks the slots its completions free; otherwise the
    # two claims are one.
    for freed in (
        " - coalesce((SELECT f.n FROM freed AS f WHERE f.key = s.key), 0)",
        " - coalesce(f.n, 0)",
        " LEFT JOIN freed AS f ON f.key = c.concurrency_key",
        " UNION ALL SELECT key FROM freed",
        # ... and the budgets and rate-limit rows its completions settle, in the same order.
        " UNION ALL SELECT unnest(budget_keys) FROM completed",
        " UNION ALL SELECT rate_limit_key FROM completed",
    ):
        body = body.replace(freed, "")
    body = body.replace("ARRAY( SELECT", "ARRAY(SELECT")
    body = body.replace("( ", "(").replace(" )", ")").replace("claimed AS (", "")
    body = body.replace(
        "s.key = j.concurrency_key AND s.running", "s.key = j.concurrency_key AND s.running"
    )
    return body.strip(" ,")


def test_the_fused_statement_claims_exactly_as_the_plain_claim() -> None:
    # Two whole literals of one claim: this keeps them from drifting apart.
    renumber = {"$3": "$1", "$4": "$2", "$7": "$5"}
    fused = re.sub(
        r"\$\d",
        lambda m: renumber.get(m.group(0), m.group(0)),
        _claim_part(queries.COMPLETE_AND_CLAIM_JOBS),
    )
    assert fused == _claim_part(queries.CLAIM_JOBS)


def test_waiting_is_cancellable() -> None:
    # A wait on several events leaves no waiter task behind.
    async def scenario() -> int:
        flag = asyncio.Event()
        from pgqueue.worker.waiting import wait_any

        await wait_any(flag, timeout=0.01)
        return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

    assert asyncio.run(scenario()) == 0


FENCED = (
    "COMPLETE_JOBS",
    "COMPLETE_AND_CLAIM_JOBS",
    "RENEW_LEASES",
    "SET_PROGRESS",
    "LOCK_HELD_JOB",
    "EXTEND_HELD_LEASE",
    "COMPLETE_JOB",
    "FAIL_ATTEMPT",
    "THROTTLE_JOB",
    "CANCEL_HELD_JOB",
    "RELEASE_JOBS",
)


@pytest.mark.parametrize("name", FENCED)
def test_every_write_about_a_held_job_is_fenced_by_its_lease(name: str) -> None:
    # The fence is spelled out in each statement, where a reader of the statement sees it.
    sql = re.sub(r"\s+", " ", getattr(queries, name))
    assert "state = 'running'" in sql and "lease_token = " in sql, name
