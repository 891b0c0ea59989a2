"""What pgqueue reports about its queues, jobs and workers, read-side: `QueueStats`,
`QueueInfo`, `FinishedMinute`, a `JobPage` of a listing, why a job waits (`Wait`,
`WaitReason`), a job's `Attempt`s (schema v12), the live `WorkerInfo`s, the `JobFilter` of a
bulk action and `KindDurations`. The rows a queue is made of are in `models`."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pgqueue.models import JobState


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of `pgqueue.queue_stats`."""

    queue: str
    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    cancelled: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QueueStats:
        """Build from a row of the view."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True, slots=True)
class QueueInfo:
    """What the dashboard shows of one queue (`Queue.queues()`).

    Args:
        queue: the queue's name.
        paused: no claim takes its jobs until it is resumed (running jobs finish).
        paused_at: when it was paused, or None.
        stats: its counts, as `pgqueue.queue_stats` has them.
        oldest_waiting_s: seconds the oldest runnable job has waited (since its `run_at`), or
            None when none waits.
        finished_last_5m: jobs that finished (any outcome) in the last five minutes.
    """

    queue: str
    paused: bool
    paused_at: datetime | None
    stats: QueueStats
    oldest_waiting_s: float | None
    finished_last_5m: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QueueInfo:
        """Build from a row of `queries.QUEUE_OVERVIEW`."""
        return cls(
            queue=record["queue"],
            paused=record["paused_at"] is not None,
            paused_at=record["paused_at"],
            stats=QueueStats.from_record(record),
            oldest_waiting_s=record["oldest_waiting_s"],
            finished_last_5m=record["finished_last_5m"],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class FinishedMinute:
    """Jobs that finished within one minute, by outcome (`Queue.finished_per_minute()`)."""

    minute: datetime
    succeeded: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        """All that finished in the minute."""
        return self.succeeded + self.failed + self.cancelled

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FinishedMinute:
        """Build from a row of `queries.FINISHED_PER_MINUTE`."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})


MAX_PAGE_SIZE = 1000  # jobs one listing returns at most


@dataclasses.dataclass(frozen=True, slots=True)
class JobPage:
    """Which jobs `Queue.list_jobs` returns: the arguments of that method, checked.

    Args:
        queue: only this queue's jobs (None: any).
        state: only jobs in this state (None: any).
        kind: only jobs of this kind (None: any).
        limit: the most jobs returned, 1-1000.
        before: only jobs with a smaller id: the last id of the previous page (None: the
            newest jobs).
        payload_match: `(field, values)`: only jobs whose payload's top-level `field`, read as
            text, is one of `values` (an application's owner or tenant field, say).
    """

    queue: str | None = None
    state: JobState | None = None
    kind: str | None = None
    limit: int = 50
    before: int | None = None
    payload_match: tuple[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1-{MAX_PAGE_SIZE}, got {self.limit}")
        if self.before is not None and not 1 <= self.before <= 2**63 - 1:
            raise ValueError(f"before must be a job id (1 to 2**63-1), got {self.before}")
        if self.state is not None and not isinstance(self.state, JobState):
            raise ValueError(f"state must be a JobState, got {self.state!r}")
        for name, value in (("queue", self.queue), ("kind", self.kind)):
            if value is not None and not 1 <= len(value) <= 128:
                raise ValueError(f"{name} must be 1-128 characters, or None for any")
        if self.payload_match is not None:
            field, values = self.payload_match
            if not field or isinstance(values, str):
                raise ValueError("payload_match is (field, [values]), e.g. ('owner', ['ann'])")


class WaitReason(enum.StrEnum):
    """Why a queued job has not started (`Wait.reason`), as the claim would decide it."""

    QUEUE_PAUSED = "queue_paused"  # its queue is paused
    RETRY_SCHEDULED = "retry_scheduled"  # an attempt failed; the next waits out its backoff
    UPSTREAM_DOWN = "upstream_down"  # its rate-limit key's breaker is open (or probing)
    RATE_LIMIT = "rate_limit"  # its rate-limit key's window is full, or the key is throttled
    OVER_BUDGET = "over_budget"  # its cost does not fit in a budget's current window
    CONCURRENCY = "concurrency"  # its concurrency key runs as many jobs as its limit allows
    QUEUED = "queued"  # nothing holds it but its turn (or the run_at it was delayed to)


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """What `Queue.explain_waits` says of one job: why it waits, and when it may be done.

    Args:
        job_id: the job.
        state: its state.
        reason: why it has not started; None unless it is queued.
        next_attempt_at: when its next attempt may start (the end of a backoff, a delay, an
            open breaker, a full rate-limit window or a budget's window); None when nothing
            but its turn or a free slot decides.
        done_in_s: estimated seconds until it is done, from its place in its queue's line and
            the queue's throughput of the last minutes (see `queries.EXPLAIN_WAITS`); 0 once
            finished; None when unknown (nothing finished lately, its queue paused, or it
            sits further back than the line that is read).
        spent: what its attempts were charged so far (its budgets' view of it); None when
            none was.
        charging: what its running attempt will be charged when it ends (what the handler
            reported with `ctx.charge`, else the job's cost); None unless it runs with a cost.
            An application that knows the paid work of the attempt is done (its result
            stored, the job not yet completed) adds it to `spent`.
    """

    job_id: int
    state: JobState
    reason: WaitReason | None
    next_attempt_at: datetime | None
    done_in_s: float | None
    spent: Decimal | None
    charging: Decimal | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Wait:
        """Build from a row of `queries.EXPLAIN_WAITS`."""
        reason = record["reason"]
        return cls(
            job_id=record["id"],
            state=JobState(record["state"]),
            reason=None if reason is None else WaitReason(reason),
            next_attempt_at=record["next_attempt_at"],
            done_in_s=record["done_in_s"],
            spent=record["spent"],
            charging=record["charging"],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a job (`Queue.attempts(job_id)`), from `pgqueue.attempts`.

    Args:
        attempt: its number, as the claim counted it (a released attempt gave its number back,
            so the next one repeats it; a retried job counts from 1 again).
        worker_id: the worker that ran it.
        started_at: when it was claimed.
        finished_at: when it ended; None while it runs.
        outcome: `running`, or how it ended: `succeeded`, `retried` (failed, the job runs
            again), `failed` (the job failed for good), `cancelled`, `released` (given back
            without spending the attempt: a shutdown, a throttle).
        error: its error (None when it had none).
    """

    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from its start to its end (None while it runs, or with no known start)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Attempt:
        """Build from a row of `queries.LIST_ATTEMPTS`."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker as it last reported itself (`pgqueue.workers`, schema v12).

    Args:
        id: its `worker_id` (what running jobs name).
        host: the host it runs on.
        pid: its process id there.
        queues: the queues it claims from.
        concurrency: its slots.
        running: slots in use at its last beat.
        started_at: its first beat.
        heartbeat_at: its last beat.
        expires_at: when it counts as gone without another beat.
        stale: `expires_at` passed: it stopped beating (killed, or cut off) without exiting.
    """

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    stale: bool

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WorkerInfo:
        """Build from a row of `queries.LIST_WORKERS`."""
        values = {f.name: record[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**values, "queues": list(values["queues"])})


MAX_PAYLOAD_FILTER_CHARS = 2000  # the longest JSON a payload filter is given as


@dataclasses.dataclass(frozen=True, slots=True)
class JobFilter:
    """Every job matching all the filters given: what a bulk retry or cancel acts on.

    Args:
        queue: only this queue's jobs (None: any).
        state: only jobs in this state (None: any; an action then changes every state it can).
        kind: only jobs of this kind (None: any).
        payload: only jobs whose payload contains this JSON object (jsonb `@>`: the fields
            given, with these values, nested ones included; None: any).
    """

    queue: str | None = None
    state: JobState | None = None
    kind: str | None = None
    payload: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, value in (("queue", self.queue), ("kind", self.kind)):
            if value is not None and not 1 <= len(value) <= 128:
                raise ValueError(f"{name} must be 1-128 characters, or None for any")
        if self.state is not None and not isinstance(self.state, JobState):
            raise ValueError(f"state must be a JobState, got {self.state!r}")
        if self.payload is not None and not isinstance(self.payload, dict):
            raise ValueError('payload must be a JSON object, e.g. {"project_id": "p1"}')

    def states(self, changeable: Sequence[JobState]) -> list[str]:
        """The states of `changeable` this filter allows, as the statements take them."""
        return [s.value for s in changeable if self.state is None or self.state == s]


@dataclasses.dataclass(frozen=True, slots=True)
class KindDurations:
    """How long one kind's recent successful jobs ran (their last attempt), in seconds.

    Args:
        kind: the jobs' kind.
        jobs: how many succeeded in the window (of those read: see `store.kind_durations`).
        p50_s: the median run time.
        p95_s: 95% ran at most this long.
        p99_s: 99% ran at most this long.
        max_s: the longest.
    """

    kind: str
    jobs: int
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> KindDurations:
        """Build from a row of `queries.KIND_DURATIONS`."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})
