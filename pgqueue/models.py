"""Rows as typed, immutable values: `Job`, `JobState`, `QueueStats`, `JobSpec`, `RateLimit`,
what the dashboard reads: `JobPage`, `QueueInfo`, `FinishedMinute`, and a job's `Attempt`s and
the live `WorkerInfo`s (schema v12)."""

from __future__ import annotations

import dataclasses
import enum
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple


class JobState(enum.StrEnum):
    """The states of `pgqueue.jobs.state`. "Delayed" is QUEUED with `run_at > now()`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def _json(value: Any) -> Any:
    # asyncpg hands jsonb over as text unless a codec is installed; accept both.
    return json.loads(value) if isinstance(value, str) else value


class Job(NamedTuple):
    """One row of `pgqueue.jobs`, immutable.

    A NamedTuple rather than a frozen dataclass: a busy worker builds tens of thousands of
    these a second, and a frozen dataclass's `__init__` (one `object.__setattr__` per field)
    measured 11 us against 3 us for a tuple. Use `job._replace(...)` for a changed copy.

    `is_new` is not a column: `Queue.enqueue` sets it to False when an idempotency key matched an
    existing job, so the caller can tell a fresh job from the one it already had.
    """

    id: int
    queue: str
    kind: str
    payload: Any
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    lease_expires_at: datetime | None
    lease_token: int | None
    worker_id: str | None
    last_error: str | None
    progress: Any
    result: Any
    idempotency_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    timeout_s: float | None
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rate_limit_key: str | None = None
    fairness_key: str | None = None
    fairness_weight: float | None = None
    cost: Decimal | None = None
    budget_keys: list[str] | None = None
    spent: Decimal | None = None
    notify_finished: bool = False
    is_new: bool = True

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, is_new: bool = True) -> Job:
        """Build a Job from an asyncpg record of `SELECT *` / `RETURNING *`."""
        values = [record[name] for name in _JOB_COLUMNS]
        values[_STATE] = _STATES[values[_STATE]]
        for index in _JSON_COLUMNS:
            values[index] = _json(values[index])
        values.append(is_new)
        return cls._make(values)

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> list[Job]:
        """`from_record` of each of these records, which all have the same columns (one
        statement's rows): the columns are found once, then read by position, in C."""
        if not records:
            return []
        # By position only for asyncpg's records (a dict, say, is read by name).
        read = None if isinstance(records[0], Mapping) else _reader(tuple(records[0].keys()))
        if read is None:
            return [cls.from_record(record) for record in records]
        make = tuple.__new__
        jobs = []
        for record in records:
            values = list(read(record))
            values[_STATE] = _STATES[values[_STATE]]
            for index in _JSON_COLUMNS:
                value = values[index]
                if value is not None:
                    values[index] = _json(value)
            values.append(True)
            jobs.append(make(cls, values))
        return jobs


_JOB_COLUMNS = Job._fields[:-1]  # all but is_new
_STATE = _JOB_COLUMNS.index("state")
_JSON_COLUMNS = tuple(_JOB_COLUMNS.index(name) for name in ("payload", "progress", "result"))
# JobState(value) runs the enum's metaclass __call__; a dict lookup is a fifth of it.
_STATES: dict[str, JobState] = {state.value: state for state in JobState}
_readers: dict[tuple[str, ...], Callable[[Any], tuple[Any, ...]] | None] = {}


def _reader(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]] | None:
    """Reads a record with these columns as the values of `_JOB_COLUMNS`, in their order (None
    when one is missing). Cached: a statement's rows always have the same columns."""
    try:
        return _readers[columns]
    except KeyError:
        pass
    reader = None
    if set(_JOB_COLUMNS) <= set(columns):
        reader = operator.itemgetter(*(columns.index(name) for name in _JOB_COLUMNS))
    if len(_readers) < 64:
        _readers[columns] = reader
    return reader


@dataclasses.dataclass(frozen=True, slots=True)
class JobSpec:
    """What to enqueue: the arguments of `Queue.enqueue`, as a value for `enqueue_many`.

    Args:
        kind: the handler's name in the worker's registry.
        payload: any JSON-serialisable value handed to the handler.
        queue: the queue's name; `None` takes the Queue's default.
        priority: smaller runs first.
        run_at: earliest start (aware datetime); exclusive with `delay`.
        delay: earliest start relative to the database's `now()`.
        max_attempts: attempts before the job is failed; `None` takes the Queue's default.
        timeout: per-attempt time limit; the handler is cancelled when it is reached.
        idempotency_key: a second enqueue with the same key returns the first job.
        concurrency_key: jobs sharing it never run more than `concurrency_limit` at once.
        concurrency_limit: required with `concurrency_key`, >= 1.
        rate_limit_key: jobs sharing it start no faster than the key's limit allows
            (`Queue.set_rate_limit`); a key without a limit only pauses when throttled.
            Its breaker (`Queue.set_breaker`) holds them all while the upstream is down.
        fairness_key: jobs of different keys (users, tenants) take turns within a priority,
            in proportion to `fairness_weight`, instead of first come, first served.
        fairness_weight: the key's share of turns (default 1; more than 0, at most 100).
        cost: what one attempt may spend, reserved against each of `budget_keys` while it
            runs (a handler reports what it really spent with `ctx.charge`).
        budget_keys: budgets (`Queue.set_budget`) the job spends from, 1-8 keys; the job
            starts only when its cost fits every one of them.
        notify_finished: when the job ends (succeeded, failed or cancelled), notify the
            channel `pgqueue_finished` with `{"id", "queue", "kind", "state"}` as JSON, so a
            producer can LISTEN instead of polling.
    """

    kind: str
    payload: Any = None
    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    delay: timedelta | None = None
    max_attempts: int | None = None
    timeout: timedelta | None = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_limit_key: str | None = None
    fairness_key: str | None = None
    fairness_weight: float | None = None
    cost: float | Decimal | None = None
    budget_keys: Sequence[str] | None = None
    notify_finished: bool = False

    def __post_init__(self) -> None:
        if not self.kind or len(self.kind) > 128:
            raise ValueError("kind must be 1-128 characters, e.g. 'storyboard.generate'")
        if self.queue is not None and not 1 <= len(self.queue) <= 128:
            raise ValueError("queue must be 1-128 characters, or None for the default queue")
        if self.run_at is not None and self.delay is not None:
            raise ValueError("give run_at or delay, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware, e.g. datetime.now(timezone.utc)")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive, or None for no time limit")
        if (self.concurrency_key is None) != (self.concurrency_limit is None):
            raise ValueError("give concurrency_key and concurrency_limit together")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {self.concurrency_limit}")
        if not -(2**31) <= self.priority < 2**31:
            raise ValueError("priority must fit a 32-bit integer")
        if self.rate_limit_key is not None:
            check_rate_limit_key(self.rate_limit_key)
        self._check_governed()

    def _check_governed(self) -> None:
        if self.fairness_key is not None:
            check_key(self.fairness_key, "fairness key")
        if self.fairness_weight is not None:
            if self.fairness_key is None:
                raise ValueError("fairness_weight needs a fairness_key")
            if not 0 < self.fairness_weight <= MAX_FAIRNESS_WEIGHT:  # False for NaN too
                raise ValueError(
                    f"fairness_weight must be more than 0 and at most {MAX_FAIRNESS_WEIGHT:g}, "
                    f"got {self.fairness_weight!r}"
                )
        if self.budget_keys is not None:
            if isinstance(self.budget_keys, str) or not 1 <= len(self.budget_keys) <= 8:
                raise ValueError("budget_keys must be a list of 1-8 keys, e.g. ['user:ann']")
            for key in self.budget_keys:
                check_key(key, "budget key")
            if self.cost is None:
                raise ValueError("budget_keys need a cost (what one attempt may spend)")
        if self.cost is not None:
            check_amount(self.cost, "cost")


MAX_RATE_LIMIT = 10_000  # starts per period a key may allow (its row keeps one time per start)
MAX_RATE_PERIOD_S = 86_400.0  # the longest period: a day
_PERIODS_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


MAX_FAIRNESS_WEIGHT = 100.0
MAX_AMOUNT = 10**12  # costs and budgets: numeric(<1e12) in the table


def check_rate_limit_key(key: str) -> str:
    """`key` if it can name a rate-limit key (1-200 characters); ValueError otherwise."""
    return check_key(key, "rate-limit key")


def check_key(key: str, what: str) -> str:
    """`key` if it can name a key of pgqueue's (1-200 characters, no NUL); ValueError
    otherwise, naming `what` it was to be."""
    if not isinstance(key, str) or not 1 <= len(key) <= 200 or "\x00" in key:
        raise ValueError(f"a {what} is 1-200 characters, got {key!r}")
    return key


def check_amount(value: float | Decimal, what: str) -> Decimal:
    """`value` as a Decimal if it is a finite amount >= 0 (a cost, a budget); ValueError
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{what} must be a number, got {value!r}")
    amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite() or not 0 <= amount < MAX_AMOUNT:
        raise ValueError(f"{what} must be at least 0 and less than 10^12, got {value!r}")
    return amount


@dataclasses.dataclass(frozen=True, slots=True)
class Breaker:
    """A circuit breaker: `threshold` transient upstream failures in a row within `window_s`
    seconds open it for `open_s` seconds (twice as long after each failed probe, at most 64
    times), then one probe job starts; its success closes it.

    Args:
        threshold: failures in a row that open it, 1-1000.
        window_s: the failures must fall within this many seconds (more than 0, a day at most).
        open_s: how long it first stays open (more than 0, a day at most).
    """

    threshold: int
    window_s: float
    open_s: float

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise ValueError(f"a breaker's threshold must be an integer, got {self.threshold!r}")
        if not 1 <= self.threshold <= 1000:
            raise ValueError(f"a breaker opens after 1-1000 failures, got {self.threshold}")
        for name in ("window_s", "open_s"):
            value = getattr(self, name)
            if not 0 < value <= MAX_RATE_PERIOD_S:  # False for NaN too
                raise ValueError(f"a breaker's {name} must be more than 0 and at most a day")

    @classmethod
    def parse(cls, text: str) -> Breaker | None:
        """Read `N/Ws,open=Os` (e.g. `5/30s,open=30s`); `off` is None.

        Raises:
            ValueError: the text is not of that form, or a value is out of range.
        """
        cleaned = text.strip().lower()
        if cleaned == "off":
            return None
        match = _BREAKER.fullmatch(cleaned)
        if match is None:
            raise ValueError(
                f"a breaker reads N/Ws,open=Os (e.g. 5/30s,open=30s) or off, got {text!r}"
            )
        return cls(int(match["n"]), float(match["window"]), float(match["open"]))

    def __str__(self) -> str:
        return f"{self.threshold}/{self.window_s:g}s,open={self.open_s:g}s"


_BREAKER = re.compile(
    r"(?P<n>\d+)\s*/\s*(?P<window>\d+(?:\.\d+)?)\s*s\s*,\s*open\s*=\s*(?P<open>\d+(?:\.\d+)?)\s*s"
)


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` starts in any window of `period_s` seconds (a burst of `limit` at most).

    Args:
        limit: starts per period, 1-10000.
        period_s: the window, in seconds: more than 0, at most a day.
    """

    limit: int
    period_s: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise ValueError(f"a rate limit's count must be an integer, got {self.limit!r}")
        if not 1 <= self.limit <= MAX_RATE_LIMIT:
            raise ValueError(f"a rate limit allows 1-{MAX_RATE_LIMIT} starts, got {self.limit}")
        if not 0 < self.period_s <= MAX_RATE_PERIOD_S:  # False for NaN too
            raise ValueError(
                f"a rate limit's period must be more than 0 and at most a day, "
                f"got {self.period_s!r} s"
            )

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read `N/s`, `N/min` or `N/h` (e.g. `60/min`).

        Raises:
            ValueError: the text is not of that form, or N is out of range.
        """
        count, slash, unit = text.strip().partition("/")
        period_s = _PERIODS_S.get(unit.strip().lower())
        if not slash or period_s is None or not count.strip().isdigit():
            raise ValueError(f"a rate limit reads N/s, N/min or N/h (e.g. 60/min), got {text!r}")
        return cls(int(count), period_s)

    def __str__(self) -> str:
        for unit, seconds in (("h", 3600.0), ("min", 60.0), ("s", 1.0)):
            if self.period_s == seconds:
                return f"{self.limit}/{unit}"
        return f"{self.limit}/{self.period_s:g}s"


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
