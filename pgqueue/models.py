"""The rows a queue is made of, as typed, immutable values: `Job`, `JobState`, `JobSpec`, and
the governor's `RateLimit` and `Breaker` with the checks of their keys and amounts. What
pgqueue reports about them (stats, listings, waits, attempts, workers) is in `reports`."""

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
